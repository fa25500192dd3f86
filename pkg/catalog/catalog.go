package catalog

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Default document names, used in problems of catalogs built with New.
const (
	RegistryFileName   = "MODEL_REGISTRY.json"
	CategoriesFileName = "task_categories.json"
	// FormatVersion is the version of both documents this package reads and writes.
	FormatVersion = 1
)

// Catalog is a validated registry with its categories and benchmarks. It is
// immutable: the edit methods return a new Catalog. Its slices and the
// pointers its lookups return are shared and must not be modified.
type Catalog struct {
	Benchmarks []Benchmark // sorted by name
	Categories []Category  // sorted by name
	Models     []Model     // sorted by id

	registryFile, categoriesFile string

	benchmarks map[string]*Benchmark
	categories map[string]*Category
	models     map[string]*Model
	serving    map[string][]*Model
}

// New validates the entries and builds a catalog from copies of them. It
// returns a *ValidationError listing every problem, naming the entries by
// their index in the arguments.
func New(benchmarks []Benchmark, categories []Category, models []Model) (*Catalog, error) {
	return build(RegistryFileName, CategoriesFileName, benchmarks, categories, models)
}

func build(registryFile, categoriesFile string, benchmarks []Benchmark, categories []Category, models []Model) (*Catalog, error) {
	in := &input{registryFile: registryFile, categoriesFile: categoriesFile, haveCategories: true}
	var schemaProbs []problem
	for i, b := range benchmarks {
		r := entryRef{file: categoriesFile, fileIdx: 1, section: secBenchmarks, idx: i, name: b.Name}
		in.benchmarks, in.benchRefs = append(in.benchmarks, b), append(in.benchRefs, r)
		schemaProbs = append(schemaProbs, entrySchemaProblems(&r, b)...)
	}
	for i, c := range categories {
		c = cloneCategory(c)
		r := entryRef{file: categoriesFile, fileIdx: 1, section: secCategories, idx: i, name: c.Name}
		in.categories, in.catRefs = append(in.categories, c), append(in.catRefs, r)
		schemaProbs = append(schemaProbs, entrySchemaProblems(&r, c)...)
	}
	for i, m := range models {
		m = cloneModel(m)
		r := entryRef{file: registryFile, fileIdx: 0, section: secModels, idx: i, name: m.ID}
		in.models, in.modelRefs = append(in.models, m), append(in.modelRefs, r)
		schemaProbs = append(schemaProbs, entrySchemaProblems(&r, m)...)
	}
	if probs := merge(schemaProbs, check(in)); len(probs) > 0 {
		return nil, newValidationError(probs)
	}
	return assemble(in), nil
}

// assemble sorts and indexes validated entries, which it takes over.
func assemble(in *input) *Catalog {
	c := &Catalog{
		Benchmarks: in.benchmarks, Categories: in.categories, Models: in.models,
		registryFile: in.registryFile, categoriesFile: in.categoriesFile,
		benchmarks: make(map[string]*Benchmark, len(in.benchmarks)),
		categories: make(map[string]*Category, len(in.categories)),
		models:     make(map[string]*Model, len(in.models)),
		serving:    make(map[string][]*Model, len(in.categories)),
	}
	slices.SortFunc(c.Benchmarks, func(a, b Benchmark) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Categories, func(a, b Category) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Models, func(a, b Model) int { return strings.Compare(a.ID, b.ID) })
	for i := range c.Benchmarks {
		c.benchmarks[c.Benchmarks[i].Name] = &c.Benchmarks[i]
	}
	for i := range c.Categories {
		c.categories[c.Categories[i].Name] = &c.Categories[i]
	}
	for i := range c.Models {
		m := &c.Models[i]
		c.models[m.ID] = m
		for _, cat := range m.OrchestrationCategories {
			c.serving[cat] = append(c.serving[cat], m)
		}
	}
	return c
}

// cloneModel deep-copies a model. Required lists and maps that are nil
// become empty, so that they encode as [] and {} rather than null: a model
// without scores is valid, and one without categories is reported as such
// rather than as a null.
func cloneModel(m Model) Model {
	m.OrchestrationCategories = slices.Clone(m.OrchestrationCategories)
	if m.OrchestrationCategories == nil {
		m.OrchestrationCategories = []string{}
	}
	m.Benchmarks = maps.Clone(m.Benchmarks)
	if m.Benchmarks == nil {
		m.Benchmarks = map[string]float64{}
	}
	m.Confidence = maps.Clone(m.Confidence)
	return m
}

// cloneCategory deep-copies a category; nil weights become empty, as in cloneModel.
func cloneCategory(c Category) Category {
	c.Weights = maps.Clone(c.Weights)
	if c.Weights == nil {
		c.Weights = map[string]float64{}
	}
	c.Rationale = maps.Clone(c.Rationale)
	return c
}

// Model returns the model with that id.
func (c *Catalog) Model(id string) (*Model, bool) {
	m, ok := c.models[id]
	return m, ok
}

// Category returns the category with that name.
func (c *Catalog) Category(name string) (*Category, bool) {
	cat, ok := c.categories[name]
	return cat, ok
}

// Benchmark returns the benchmark with that name.
func (c *Catalog) Benchmark(name string) (*Benchmark, bool) {
	b, ok := c.benchmarks[name]
	return b, ok
}

// ModelsServing returns the models that list the category, disabled ones
// included, sorted by id.
func (c *Catalog) ModelsServing(category string) []*Model {
	return slices.Clip(c.serving[category])
}

// RegistryFile returns a copy of the registry document, models sorted by id.
func (c *Catalog) RegistryFile() RegistryFile {
	f := RegistryFile{Version: FormatVersion, Models: make([]Model, len(c.Models))}
	for i, m := range c.Models {
		f.Models[i] = cloneModel(m)
	}
	return f
}

// CategoriesFile returns a copy of the categories document, benchmarks and
// categories sorted by name.
func (c *Catalog) CategoriesFile() CategoriesFile {
	f := CategoriesFile{
		Version:    FormatVersion,
		Benchmarks: slices.Clone(c.Benchmarks),
		Categories: make([]Category, len(c.Categories)),
	}
	if f.Benchmarks == nil {
		f.Benchmarks = []Benchmark{}
	}
	for i, cat := range c.Categories {
		f.Categories[i] = cloneCategory(cat)
	}
	return f
}

func (c *Catalog) rebuild(benchmarks []Benchmark, categories []Category, models []Model) (*Catalog, error) {
	return build(c.registryFile, c.categoriesFile, benchmarks, categories, models)
}

// WithModel returns a catalog with m added, or replacing the model of the
// same id; the original is unchanged. It fails, changing nothing, when the
// result would be invalid.
func (c *Catalog) WithModel(m Model) (*Catalog, error) {
	models := slices.Clone(c.Models)
	if i := slices.IndexFunc(models, func(x Model) bool { return x.ID == m.ID }); i >= 0 {
		models[i] = m
	} else {
		models = append(models, m)
	}
	return c.rebuild(c.Benchmarks, c.Categories, models)
}

// WithoutModel returns a catalog without the model; ErrNotFound when there is none.
func (c *Catalog) WithoutModel(id string) (*Catalog, error) {
	i := slices.IndexFunc(c.Models, func(x Model) bool { return x.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("%w: model %q", ErrNotFound, id)
	}
	return c.rebuild(c.Benchmarks, c.Categories, slices.Delete(slices.Clone(c.Models), i, i+1))
}

// WithCategory returns a catalog with cat added, or replacing the category of
// the same name. It fails, changing nothing, when the result would be invalid.
func (c *Catalog) WithCategory(cat Category) (*Catalog, error) {
	cats := slices.Clone(c.Categories)
	if i := slices.IndexFunc(cats, func(x Category) bool { return x.Name == cat.Name }); i >= 0 {
		cats[i] = cat
	} else {
		cats = append(cats, cat)
	}
	return c.rebuild(c.Benchmarks, cats, c.Models)
}

// WithoutCategory returns a catalog without the category: ErrNotFound when
// there is none, ErrCategoryInUse (naming the models) while models list it.
func (c *Catalog) WithoutCategory(name string) (*Catalog, error) {
	i := slices.IndexFunc(c.Categories, func(x Category) bool { return x.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("%w: category %q", ErrNotFound, name)
	}
	if users := c.serving[name]; len(users) > 0 {
		ids := make([]string, len(users))
		for j, m := range users {
			ids[j] = m.ID
		}
		return nil, fmt.Errorf("%w: category %q is listed by %d model(s): %s",
			ErrCategoryInUse, name, len(ids), strings.Join(ids, ", "))
	}
	return c.rebuild(c.Benchmarks, slices.Delete(slices.Clone(c.Categories), i, i+1), c.Models)
}

// WithBenchmarkWeight sets the weight of a benchmark in a category (the
// seed's setBenchmarkWeight). Weight 0 stops weighing it (and drops its
// rationale); that is a no-op when it was not weighed. ErrNotFound for an
// unknown category, ErrUnknownBenchmark for an undeclared benchmark; an
// invalid weight or removing the last one fails validation.
func (c *Catalog) WithBenchmarkWeight(category, benchmark string, weight float64) (*Catalog, error) {
	cur, ok := c.categories[category]
	if !ok {
		return nil, fmt.Errorf("%w: category %q", ErrNotFound, category)
	}
	if _, ok := c.benchmarks[benchmark]; !ok {
		return nil, fmt.Errorf("%w: benchmark %q is not declared", ErrUnknownBenchmark, benchmark)
	}
	cat := cloneCategory(*cur)
	if weight == 0 {
		if _, weighted := cat.Weights[benchmark]; !weighted {
			return c, nil
		}
		delete(cat.Weights, benchmark)
		delete(cat.Rationale, benchmark)
	} else {
		if cat.Weights == nil {
			cat.Weights = map[string]float64{}
		}
		cat.Weights[benchmark] = weight
	}
	return c.WithCategory(cat)
}

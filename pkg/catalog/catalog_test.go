package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nlocalmodels/orchestrator/schemas"
)

const (
	registryPath   = "testdata/MODEL_REGISTRY.json"
	categoriesPath = "testdata/task_categories.json"
)

func testCatalog(t *testing.T) *Catalog {
	t.Helper()
	c, err := Load(registryPath, categoriesPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawDoc returns a testdata file decoded with json.Number, for editing.
func rawDoc(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemas.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

// edit changes a raw document at a JSON pointer: set a value, delete it, or
// append to the list there.
type edit struct {
	ptr    string
	val    any
	op     string
	inRegs bool // edits MODEL_REGISTRY.json, else task_categories.json
}

func regSet(ptr string, val any) edit    { return edit{ptr: ptr, val: val, op: "set", inRegs: true} }
func regDel(ptr string) edit             { return edit{ptr: ptr, op: "del", inRegs: true} }
func regAppend(ptr string, val any) edit { return edit{ptr: ptr, val: val, op: "append", inRegs: true} }
func catSet(ptr string, val any) edit    { return edit{ptr: ptr, val: val, op: "set"} }
func catAppend(ptr string, val any) edit { return edit{ptr: ptr, val: val, op: "append"} }

func (e edit) apply(t *testing.T, doc map[string]any) {
	t.Helper()
	toks := strings.Split(e.ptr, "/")[1:]
	var parent any = doc
	for _, tok := range toks[:len(toks)-1] {
		switch n := parent.(type) {
		case map[string]any:
			parent = n[tok]
		case []any:
			i, _ := strconv.Atoi(tok)
			parent = n[i]
		}
	}
	last := toks[len(toks)-1]
	switch n := parent.(type) {
	case map[string]any:
		switch e.op {
		case "set":
			n[last] = e.val
		case "del":
			delete(n, last)
		case "append":
			n[last] = append(n[last].([]any), e.val)
		}
	case []any:
		i, _ := strconv.Atoi(last)
		n[i] = e.val
	default:
		t.Fatalf("bad pointer %q", e.ptr)
	}
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseEdited(t *testing.T, edits ...edit) error {
	t.Helper()
	reg, cat := rawDoc(t, registryPath), rawDoc(t, categoriesPath)
	for _, e := range edits {
		if e.inRegs {
			e.apply(t, reg)
		} else {
			e.apply(t, cat)
		}
	}
	_, err := Parse(RegistryFileName, marshal(t, reg), CategoriesFileName, marshal(t, cat))
	return err
}

func problems(t *testing.T, err error) []Problem {
	t.Helper()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	if !errors.Is(err, ErrInvalidCatalog) {
		t.Fatalf("err does not wrap ErrInvalidCatalog")
	}
	return verr.Problems
}

func TestLoadAndLookups(t *testing.T) {
	c := testCatalog(t)
	if len(c.Models) != 4 || len(c.Categories) != 3 || len(c.Benchmarks) != 6 {
		t.Fatalf("got %d models, %d categories, %d benchmarks", len(c.Models), len(c.Categories), len(c.Benchmarks))
	}
	m, ok := c.Model("qwen2.5-math-7b-instruct-q8_0")
	if !ok || m.GPUMemoryMB != 9216 || m.PrimaryCategory() != "math" {
		t.Fatalf("Model lookup = %+v, %v", m, ok)
	}
	if _, ok := c.Model("nope"); ok {
		t.Fatal("unknown model found")
	}
	if cat, ok := c.Category("math"); !ok || cat.Weights["MATH"] != 1.5 {
		t.Fatalf("Category lookup = %+v, %v", cat, ok)
	}
	if b, ok := c.Benchmark("HumanEval"); !ok || b.Metric != "pass@1 %" {
		t.Fatalf("Benchmark lookup = %+v, %v", b, ok)
	}
	var ids []string
	for _, m := range c.ModelsServing("reasoning") {
		ids = append(ids, m.ID)
	}
	want := []string{"llama-3.1-8b-instruct-q4_k_m", "phi-3-mini-4k-instruct-fp16", "qwen2.5-coder-7b-instruct-q4_k_m"}
	if !slices.Equal(ids, want) {
		t.Fatalf("ModelsServing(reasoning) = %v, want %v", ids, want)
	}
	if got := c.ModelsServing("chemistry"); len(got) != 0 {
		t.Fatalf("ModelsServing(chemistry) = %v", got)
	}
}

// Exported documents are sorted, match their schemas and parse back to the same catalog.
func TestExportRoundTrip(t *testing.T) {
	c := testCatalog(t)
	reg, cats := c.RegistryFile(), c.CategoriesFile()
	if !slices.IsSortedFunc(reg.Models, func(a, b Model) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatal("registry models are not sorted by id")
	}
	if !slices.IsSortedFunc(cats.Benchmarks, func(a, b Benchmark) int { return strings.Compare(a.Name, b.Name) }) ||
		!slices.IsSortedFunc(cats.Categories, func(a, b Category) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("categories file is not sorted by name")
	}
	regJSON, catJSON := marshal(t, reg), marshal(t, cats)
	if err := schemas.Validate(schemas.ModelRegistryFile, regJSON); err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate(schemas.TaskCategoriesFile, catJSON); err != nil {
		t.Fatal(err)
	}
	again, err := Parse("a", regJSON, "b", catJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Models, c.Models) || !reflect.DeepEqual(again.Categories, c.Categories) ||
		!reflect.DeepEqual(again.Benchmarks, c.Benchmarks) {
		t.Fatal("round trip changed the catalog")
	}
	// The exports are copies.
	reg.Models[0].Benchmarks["HumanEval"] = 1
	cats.Categories[0].Weights["HumanEval"] = 99
	if c.Models[0].Benchmarks["HumanEval"] == 1 || c.Categories[0].Weights["HumanEval"] == 99 {
		t.Fatal("editing an export changed the catalog")
	}
}

const (
	coder = `models[0] "qwen2.5-coder-7b-instruct-q4_k_m"`
	mathM = `models[1] "qwen2.5-math-7b-instruct-q8_0"`
)

func TestParseRules(t *testing.T) {
	aBenchmark := map[string]any{"name": "MBPP", "description": "again", "metric": "pass@1 %"}
	tests := []struct {
		name   string
		edits  []edit
		want   error
		file   string
		entry  string
		field  string
		detail string
	}{
		{"score above 100", []edit{regSet("/models/0/benchmarks/HumanEval", 120)},
			ErrScoreOutOfRange, RegistryFileName, coder, "benchmarks.HumanEval", "score 120 is outside 0..100"},
		{"negative score", []edit{regSet("/models/1/benchmarks/GSM8K", -5)},
			ErrScoreOutOfRange, RegistryFileName, mathM, "benchmarks.GSM8K", "score -5 is outside 0..100"},
		{"zero memory", []edit{regSet("/models/1/gpu_memory_mb", 0)},
			ErrInvalidMemory, RegistryFileName, mathM, "gpu_memory_mb", "0 MB must be positive"},
		{"negative memory", []edit{regSet("/models/1/gpu_memory_mb", -1)},
			ErrInvalidMemory, RegistryFileName, mathM, "gpu_memory_mb", "-1 MB"},
		{"duplicate id", []edit{regSet("/models/3/id", "qwen2.5-math-7b-instruct-q8_0")},
			ErrDuplicateID, RegistryFileName, `models[3] "qwen2.5-math-7b-instruct-q8_0"`, "id", "already used by models[1]"},
		{"unknown category", []edit{regSet("/models/1/orchestration_categories/0", "chemistry")},
			ErrUnknownCategory, RegistryFileName, mathM, "orchestration_categories[0]", `category "chemistry" is not in task_categories.json`},
		{"no categories", []edit{regSet("/models/1/orchestration_categories", []any{})},
			ErrNoCategories, RegistryFileName, mathM, "orchestration_categories", "lists no orchestration category"},
		{"confidence above 1", []edit{regSet("/models/0/confidence/reasoning", 1.5)},
			ErrInvalidConfidence, RegistryFileName, coder, "confidence.reasoning", "1.5 is outside (0,1]"},
		{"confidence zero", []edit{regSet("/models/0/confidence/reasoning", 0)},
			ErrInvalidConfidence, RegistryFileName, coder, "confidence.reasoning", "0 is outside (0,1]"},
		{"confidence for unlisted category", []edit{regSet("/models/0/confidence/math", 0.5)},
			ErrInvalidConfidence, RegistryFileName, coder, "confidence.math", `category "math", which the model does not list`},
		{"model score for undeclared benchmark", []edit{regSet("/models/1/benchmarks/HellaSwag", 80)},
			ErrUnknownBenchmark, RegistryFileName, mathM, "benchmarks.HellaSwag", `benchmark "HellaSwag" is not declared`},
		{"category weighs undeclared benchmark", []edit{catSet("/categories/1/weights/AIME", 2)},
			ErrUnknownBenchmark, CategoriesFileName, `categories[1] "math"`, "weights.AIME", `benchmark "AIME" is not declared`},
		{"rationale for unweighted benchmark", []edit{catSet("/categories/0/rationale/GSM8K", "why not")},
			ErrUnknownBenchmark, CategoriesFileName, `categories[0] "code"`, "rationale.GSM8K", "does not weigh"},
		{"zero weight", []edit{catSet("/categories/0/weights/MBPP", 0)},
			ErrInvalidWeight, CategoriesFileName, `categories[0] "code"`, "weights.MBPP", "weight 0 must be"},
		{"negative weight", []edit{catSet("/categories/0/weights/MBPP", -0.8)},
			ErrInvalidWeight, CategoriesFileName, `categories[0] "code"`, "weights.MBPP", "weight -0.8 must be"},
		{"weight below MinWeight", []edit{catSet("/categories/0/weights/MBPP", 5e-324)},
			ErrInvalidWeight, CategoriesFileName, `categories[0] "code"`, "weights.MBPP", "weight 5e-324 must be a number from 1e-06 to 1000"},
		{"weight above MaxWeight", []edit{catSet("/categories/0/weights/MBPP", 1000.5)},
			ErrInvalidWeight, CategoriesFileName, `categories[0] "code"`, "weights.MBPP", "weight 1000.5 must be"},
		{"empty category", []edit{catSet("/categories/2/weights", map[string]any{})},
			ErrEmptyCategory, CategoriesFileName, `categories[2] "reasoning"`, "weights", "weighs no benchmark"},
		{"duplicate category", []edit{catAppend("/categories", map[string]any{"name": "code", "description": "again", "weights": map[string]any{"MBPP": 1}})},
			ErrDuplicateCategory, CategoriesFileName, `categories[3] "code"`, "name", "already defined at categories[0]"},
		{"duplicate benchmark", []edit{catAppend("/benchmarks", aBenchmark)},
			ErrDuplicateBenchmark, CategoriesFileName, `benchmarks[6] "MBPP"`, "name", "already declared at benchmarks[1]"},
		{"schema: unknown model field", []edit{regSet("/models/2/vram", 8)},
			ErrSchema, RegistryFileName, `models[2] "llama-3.1-8b-instruct-q4_k_m"`, "vram", `property "vram" is not allowed`},
		{"schema: category name with a dot", []edit{catAppend("/categories", map[string]any{"name": "code.review", "description": "d", "weights": map[string]any{"MBPP": 1}})},
			ErrSchema, CategoriesFileName, `categories[3] "code.review"`, "name", "does not match pattern"},
		{"schema: missing memory is not reported as zero memory", []edit{regDel("/models/1/gpu_memory_mb")},
			ErrSchema, RegistryFileName, mathM, "gpu_memory_mb", `missing required property "gpu_memory_mb"`},
		{"schema: memory of the wrong type is not reported as zero memory", []edit{regSet("/models/1/gpu_memory_mb", "lots")},
			ErrSchema, RegistryFileName, mathM, "gpu_memory_mb", "want integer"},
		{"schema: integer written as a float does not decode", []edit{regSet("/models/1/gpu_memory_mb", json.Number("9216.0"))},
			ErrSchema, RegistryFileName, mathM, "gpu_memory_mb", "cannot be decoded"},
		{"a malformed benchmark key is reported once, as undeclared", []edit{regSet("/models/1/benchmarks/GSM 8K", 50)},
			ErrUnknownBenchmark, RegistryFileName, mathM, "benchmarks.GSM 8K", `benchmark "GSM 8K" is not declared`},
		{"schema: file version", []edit{regSet("/version", 2)},
			ErrSchema, RegistryFileName, "", "version", "value must be 1"},
		{"schema: entry not an object", []edit{regSet("/models/1", "qwen")},
			ErrSchema, RegistryFileName, "models[1]", "", "want object"},
		{"schema: a category of the wrong type is not reported as unknown", []edit{regSet("/models/1/orchestration_categories/0", 7)},
			ErrSchema, RegistryFileName, mathM, "orchestration_categories[0]", "want string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := parseEdited(t, tc.edits...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			probs := problems(t, err)
			if len(probs) != 1 {
				t.Fatalf("%d problems, want 1:\n%v", len(probs), err)
			}
			p := probs[0]
			if p.File != tc.file || p.Entry != tc.entry || p.Field != tc.field || !errors.Is(p, tc.want) {
				t.Fatalf("problem %q at (%q, %q, %q), want (%q, %q, %q) %v", p, p.File, p.Entry, p.Field, tc.file, tc.entry, tc.field, tc.want)
			}
			if !strings.Contains(p.Err.Error(), tc.detail) {
				t.Fatalf("detail %q does not contain %q", p.Err, tc.detail)
			}
			line := err.Error()
			for _, part := range []string{tc.file, tc.entry, tc.field} {
				if !strings.Contains(line, part) {
					t.Fatalf("message %q does not name %q", line, part)
				}
			}
		})
	}
}

func TestProblemLineFormat(t *testing.T) {
	err := parseEdited(t, regSet("/models/0/benchmarks/HumanEval", 120))
	want := `MODEL_REGISTRY.json: models[0] "qwen2.5-coder-7b-instruct-q4_k_m": benchmarks.HumanEval: score 120 is outside 0..100`
	if err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func TestEveryProblemOfABrokenFileIsReported(t *testing.T) {
	err := parseEdited(t,
		regSet("/models/0/benchmarks/HumanEval", 120),
		regSet("/models/1/gpu_memory_mb", 0),
		regSet("/models/2/orchestration_categories/2", "chemistry"),
		regSet("/models/3/id", "qwen2.5-coder-7b-instruct-q4_k_m"),
		regSet("/models/3/notes", "fast"),
	)
	probs := problems(t, err)
	type loc struct {
		entry, field string
		kind         error
	}
	want := []loc{
		{coder, "benchmarks.HumanEval", ErrScoreOutOfRange},
		{mathM, "gpu_memory_mb", ErrInvalidMemory},
		{`models[2] "llama-3.1-8b-instruct-q4_k_m"`, "orchestration_categories[2]", ErrUnknownCategory},
		{`models[3] "qwen2.5-coder-7b-instruct-q4_k_m"`, "id", ErrDuplicateID},
		{`models[3] "qwen2.5-coder-7b-instruct-q4_k_m"`, "notes", ErrSchema},
	}
	if len(probs) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(probs), len(want), err)
	}
	for i, w := range want {
		p := probs[i]
		if p.File != RegistryFileName || p.Entry != w.entry || p.Field != w.field || !errors.Is(p, w.kind) {
			t.Errorf("problem %d = %q, want %s %s %v", i, p, w.entry, w.field, w.kind)
		}
		if !errors.Is(err, w.kind) {
			t.Errorf("errors.Is(err, %v) = false", w.kind)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%v", len(lines), len(want), err)
	}
}

// A rule replaces only the schema violation that says the same thing: a
// duplicated malformed id is reported as malformed twice and as a duplicate.
func TestDistinctFaultsAtOneFieldAreAllReported(t *testing.T) {
	err := parseEdited(t, regSet("/models/2/id", "Bad Id"), regSet("/models/3/id", "Bad Id"))
	probs := problems(t, err)
	if len(probs) != 3 || !errors.Is(probs[0], ErrSchema) || !errors.Is(probs[1], ErrSchema) || !errors.Is(probs[2], ErrDuplicateID) {
		t.Fatalf("problems:\n%v", err)
	}
}

// Problems in both files are reported together, registry first.
func TestProblemsInBothFiles(t *testing.T) {
	err := parseEdited(t, regSet("/models/1/gpu_memory_mb", 0), catSet("/categories/0/weights/MBPP", -1))
	probs := problems(t, err)
	if len(probs) != 2 || probs[0].File != RegistryFileName || probs[1].File != CategoriesFileName {
		t.Fatalf("problems:\n%v", err)
	}
}

func TestMalformedFile(t *testing.T) {
	cat, err := os.ReadFile(categoriesPath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("reg.json", []byte(`{"version": 1, "models": [}`), "cats.json", cat)
	if !errors.Is(err, ErrSchema) || !errors.Is(err, schemas.ErrMalformedJSON) {
		t.Fatalf("err = %v, want ErrSchema and ErrMalformedJSON", err)
	}
	probs := problems(t, err)
	if len(probs) != 1 || probs[0].File != "reg.json" || !strings.Contains(err.Error(), "byte 27") {
		t.Fatalf("problems:\n%v", err)
	}
	// With the categories unreadable, models are not accused of unknown categories.
	reg, err := os.ReadFile(registryPath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("reg.json", reg, "cats.json", []byte(`nope`))
	if probs := problems(t, err); len(probs) != 1 || probs[0].File != "cats.json" {
		t.Fatalf("problems:\n%v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "MODEL_REGISTRY.json")
	_, err := Load(missing, categoriesPath)
	if !errors.Is(err, ErrReadFile) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want ErrReadFile naming %s", err, missing)
	}
	missingCats := filepath.Join(dir, "task_categories.json")
	_, err = Load(missing, missingCats)
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), missingCats) {
		t.Fatalf("err = %v, want both paths", err)
	}
}

func TestLoadNamesFilesByPath(t *testing.T) {
	dir := t.TempDir()
	reg := rawDoc(t, registryPath)
	regSet("/models/1/gpu_memory_mb", 0).apply(t, reg)
	path := filepath.Join(dir, "registry.json")
	if err := os.WriteFile(path, marshal(t, reg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, categoriesPath)
	if probs := problems(t, err); len(probs) != 1 || probs[0].File != path {
		t.Fatalf("problems:\n%v", err)
	}
}

func TestNewRules(t *testing.T) {
	base := testCatalog(t)
	withModel := func(f func(m *Model)) func() ([]Benchmark, []Category, []Model) {
		return func() ([]Benchmark, []Category, []Model) {
			models := slices.Clone(base.Models)
			m := cloneModel(models[0])
			f(&m)
			models[0] = m
			return base.Benchmarks, base.Categories, models
		}
	}
	tests := []struct {
		name  string
		in    func() ([]Benchmark, []Category, []Model)
		want  error
		file  string
		entry string
		field string
	}{
		{"NaN weight", func() ([]Benchmark, []Category, []Model) {
			cats := slices.Clone(base.Categories)
			cats[1] = cloneCategory(cats[1])
			cats[1].Weights["MATH"] = math.NaN()
			return base.Benchmarks, cats, base.Models
		}, ErrInvalidWeight, CategoriesFileName, `categories[1] "math"`, "weights.MATH"},
		{"NaN score", withModel(func(m *Model) { m.Benchmarks["MMLU"] = math.NaN() }),
			ErrScoreOutOfRange, RegistryFileName, `models[0] "llama-3.1-8b-instruct-q4_k_m"`, "benchmarks.MMLU"},
		{"infinite confidence", withModel(func(m *Model) { m.Confidence = map[string]float64{"code": math.Inf(1)} }),
			ErrInvalidConfidence, RegistryFileName, `models[0] "llama-3.1-8b-instruct-q4_k_m"`, "confidence.code"},
		{"parameters NaN", withModel(func(m *Model) { m.ParametersB = math.NaN() }),
			ErrSchema, RegistryFileName, `models[0] "llama-3.1-8b-instruct-q4_k_m"`, ""},
		{"id with capitals", withModel(func(m *Model) { m.ID = "Llama" }),
			ErrSchema, RegistryFileName, `models[0] "Llama"`, "id"},
		{"duplicate category in a model", withModel(func(m *Model) { m.OrchestrationCategories = []string{"code", "code"} }),
			ErrSchema, RegistryFileName, `models[0] "llama-3.1-8b-instruct-q4_k_m"`, "orchestration_categories"},
		{"nil categories", withModel(func(m *Model) { m.OrchestrationCategories = nil }),
			ErrNoCategories, RegistryFileName, `models[0] "llama-3.1-8b-instruct-q4_k_m"`, "orchestration_categories"},
		{"nil weights", func() ([]Benchmark, []Category, []Model) {
			cats := slices.Clone(base.Categories)
			cats[1].Weights = nil
			return base.Benchmarks, cats, base.Models
		}, ErrEmptyCategory, CategoriesFileName, `categories[1] "math"`, "weights"},
		{"category name with dot", func() ([]Benchmark, []Category, []Model) {
			return base.Benchmarks, append(slices.Clone(base.Categories), Category{Name: "code.review", Description: "d", Weights: map[string]float64{"MBPP": 1}}), base.Models
		}, ErrSchema, CategoriesFileName, `categories[3] "code.review"`, "name"},
		{"benchmark without metric", func() ([]Benchmark, []Category, []Model) {
			return append(slices.Clone(base.Benchmarks), Benchmark{Name: "IFEval", Description: "d"}), base.Categories, base.Models
		}, ErrSchema, CategoriesFileName, `benchmarks[6] "IFEval"`, "metric"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.in())
			if c != nil || !errors.Is(err, tc.want) {
				t.Fatalf("New = %v, %v; want %v", c, err, tc.want)
			}
			probs := problems(t, err)
			if len(probs) != 1 {
				t.Fatalf("%d problems, want 1:\n%v", len(probs), err)
			}
			if p := probs[0]; p.File != tc.file || p.Entry != tc.entry || p.Field != tc.field {
				t.Fatalf("problem %q at (%q, %q, %q), want (%q, %q, %q)", p, p.File, p.Entry, p.Field, tc.file, tc.entry, tc.field)
			}
		})
	}
}

func TestNewCopiesItsInput(t *testing.T) {
	base := testCatalog(t)
	models := []Model{cloneModel(base.Models[0])}
	models[0].Benchmarks = nil // a model may have no scores yet
	c, err := New(base.Benchmarks, base.Categories, models)
	if err != nil {
		t.Fatal(err)
	}
	models[0].OrchestrationCategories[0] = "changed"
	models[0].ID = "changed"
	m, ok := c.Model(base.Models[0].ID)
	if !ok || m.OrchestrationCategories[0] == "changed" {
		t.Fatal("editing New's input changed the catalog")
	}
	if err := schemas.Validate(schemas.ModelRegistryFile, marshal(t, c.RegistryFile())); err != nil {
		t.Fatalf("a model without scores does not export as valid JSON: %v", err)
	}
}

// snapshot is the catalog's whole content, to prove an edit left it alone.
func snapshot(t *testing.T, c *Catalog) string {
	t.Helper()
	return string(marshal(t, c.RegistryFile())) + string(marshal(t, c.CategoriesFile()))
}

func TestEdits(t *testing.T) {
	newModel := Model{
		ID: "mistral-7b-instruct-v0.3-q4_k_m", Name: "Mistral 7B Instruct v0.3", ParametersB: 7.2,
		Quantization: "q4_k_m", GPUMemoryMB: 5120, ContextLength: 32768,
		OrchestrationCategories: []string{"reasoning"}, Benchmarks: map[string]float64{"MMLU": 62.5},
		Source: "Mistral model card",
	}
	tests := []struct {
		name  string
		edit  func(c *Catalog) (*Catalog, error)
		want  error // nil: the edit succeeds
		check func(t *testing.T, got *Catalog)
	}{
		{"add model", func(c *Catalog) (*Catalog, error) { return c.WithModel(newModel) }, nil,
			func(t *testing.T, got *Catalog) {
				if m, ok := got.Model(newModel.ID); !ok || m.GPUMemoryMB != 5120 || len(got.ModelsServing("reasoning")) != 4 {
					t.Fatal("model not added")
				}
			}},
		{"replace model", func(c *Catalog) (*Catalog, error) {
			m := cloneModel(c.Models[0])
			m.GPUMemoryMB = 7000
			return c.WithModel(m)
		}, nil, func(t *testing.T, got *Catalog) {
			if len(got.Models) != 4 || got.Models[0].GPUMemoryMB != 7000 {
				t.Fatal("model not replaced")
			}
		}},
		{"add invalid model", func(c *Catalog) (*Catalog, error) {
			m := newModel
			m.OrchestrationCategories = []string{"chemistry"}
			return c.WithModel(m)
		}, ErrUnknownCategory, nil},
		{"remove model", func(c *Catalog) (*Catalog, error) { return c.WithoutModel("phi-3-mini-4k-instruct-fp16") }, nil,
			func(t *testing.T, got *Catalog) {
				if _, ok := got.Model("phi-3-mini-4k-instruct-fp16"); ok || len(got.Models) != 3 {
					t.Fatal("model not removed")
				}
			}},
		{"remove unknown model", func(c *Catalog) (*Catalog, error) { return c.WithoutModel("nope") }, ErrNotFound, nil},
		{"add category", func(c *Catalog) (*Catalog, error) {
			return c.WithCategory(Category{Name: "knowledge", Description: "Facts.", Weights: map[string]float64{"MMLU": 1}})
		}, nil, func(t *testing.T, got *Catalog) {
			if _, ok := got.Category("knowledge"); !ok || len(got.Categories) != 4 {
				t.Fatal("category not added")
			}
		}},
		{"add category weighing an undeclared benchmark", func(c *Catalog) (*Catalog, error) {
			return c.WithCategory(Category{Name: "knowledge", Description: "Facts.", Weights: map[string]float64{"TriviaQA": 1}})
		}, ErrUnknownBenchmark, nil},
		{"remove category in use", func(c *Catalog) (*Catalog, error) { return c.WithoutCategory("math") }, ErrCategoryInUse, nil},
		{"remove unknown category", func(c *Catalog) (*Catalog, error) { return c.WithoutCategory("chemistry") }, ErrNotFound, nil},
		{"remove unused category", func(c *Catalog) (*Catalog, error) {
			c, err := c.WithCategory(Category{Name: "knowledge", Description: "Facts.", Weights: map[string]float64{"MMLU": 1}})
			if err != nil {
				return nil, err
			}
			return c.WithoutCategory("knowledge")
		}, nil, func(t *testing.T, got *Catalog) {
			if _, ok := got.Category("knowledge"); ok {
				t.Fatal("category not removed")
			}
		}},
		{"change weight", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "HumanEval", 1.5) }, nil,
			func(t *testing.T, got *Catalog) {
				if cat, _ := got.Category("code"); cat.Weights["HumanEval"] != 1.5 || cat.Weights["MBPP"] != 0.8 {
					t.Fatalf("weights %v", cat.Weights)
				}
			}},
		{"add weight", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("reasoning", "GSM8K", 0.5) }, nil,
			func(t *testing.T, got *Catalog) {
				if cat, _ := got.Category("reasoning"); len(cat.Weights) != 3 || cat.Weights["GSM8K"] != 0.5 {
					t.Fatalf("weights %v", cat.Weights)
				}
			}},
		{"remove weight and its rationale", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "HumanEval", 0) }, nil,
			func(t *testing.T, got *Catalog) {
				if cat, _ := got.Category("code"); len(cat.Weights) != 1 || len(cat.Rationale) != 0 {
					t.Fatalf("weights %v rationale %v", cat.Weights, cat.Rationale)
				}
			}},
		{"remove a weight that is not set", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "GSM8K", 0) }, nil,
			func(t *testing.T, got *Catalog) {
				if cat, _ := got.Category("code"); len(cat.Weights) != 2 {
					t.Fatalf("weights %v", cat.Weights)
				}
			}},
		{"remove the last weight", func(c *Catalog) (*Catalog, error) {
			c, err := c.WithBenchmarkWeight("math", "GSM8K", 0)
			if err != nil {
				return nil, err
			}
			return c.WithBenchmarkWeight("math", "MATH", 0)
		}, ErrEmptyCategory, nil},
		{"negative weight", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "MBPP", -1) }, ErrInvalidWeight, nil},
		{"NaN weight", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "MBPP", math.NaN()) }, ErrInvalidWeight, nil},
		{"subnormal weight", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "MBPP", 5e-324) }, ErrInvalidWeight, nil},
		{"weight in unknown category", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("chemistry", "MBPP", 1) }, ErrNotFound, nil},
		{"weight of undeclared benchmark", func(c *Catalog) (*Catalog, error) { return c.WithBenchmarkWeight("code", "TriviaQA", 1) }, ErrUnknownBenchmark, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testCatalog(t)
			before := snapshot(t, c)
			got, err := tc.edit(c)
			if after := snapshot(t, c); after != before {
				t.Fatal("the edit changed the original catalog")
			}
			if tc.want != nil {
				if got != nil || !errors.Is(err, tc.want) {
					t.Fatalf("edit = %v, %v; want nil, %v", got, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
			// The result is a valid catalog in every respect.
			if _, err := Parse("r", marshal(t, got.RegistryFile()), "c", marshal(t, got.CategoriesFile())); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCategoryInUseNamesTheModels(t *testing.T) {
	_, err := testCatalog(t).WithoutCategory("math")
	for _, id := range []string{"llama-3.1-8b-instruct-q4_k_m", "qwen2.5-math-7b-instruct-q8_0"} {
		if !strings.Contains(err.Error(), id) {
			t.Fatalf("error %q does not name %s", err, id)
		}
	}
}

// Problems name edited catalogs' documents as they were loaded.
func TestEditProblemsNameLoadedFiles(t *testing.T) {
	_, err := testCatalog(t).WithBenchmarkWeight("code", "MBPP", -1)
	if probs := problems(t, err); len(probs) != 1 || probs[0].File != categoriesPath {
		t.Fatalf("problems:\n%v", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(`categories[0] "code": weights.MBPP`)) {
		t.Fatalf("error %q", err)
	}
}

package catalog

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nlocalmodels/orchestrator/schemas"
)

// ValidationError lists every problem of a catalog at once.
type ValidationError struct {
	Problems []Problem
}

// Problem is one thing wrong, located as precisely as possible.
type Problem struct {
	// File is the document, e.g. "MODEL_REGISTRY.json" or the path it was loaded from.
	File string
	// Entry is the list entry, e.g. `models[3] "qwen2.5-coder-7b-instruct-q4_k_m"`;
	// "" for the document itself.
	Entry string
	// Field is the path inside the entry, e.g. "benchmarks.HumanEval" or
	// "orchestration_categories[1]"; "" for the whole entry.
	Field string
	// Err wraps a sentinel of this package; its text is the detail.
	Err error
}

// Error reads `FILE: ENTRY: FIELD: detail`, leaving out what is empty.
func (p Problem) Error() string {
	parts := make([]string, 0, 4)
	for _, s := range []string{p.File, p.Entry, p.Field} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(append(parts, p.Err.Error()), ": ")
}

// Unwrap returns the problem's error, so errors.Is reaches its sentinel.
func (p Problem) Unwrap() error { return p.Err }

// Error is one line per problem.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns each problem's error and ErrInvalidCatalog.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, 0, len(e.Problems)+1)
	for _, p := range e.Problems {
		errs = append(errs, p.Err)
	}
	return append(errs, ErrInvalidCatalog)
}

// detailError is a problem's error: its text is the detail alone (the
// location is printed by Problem), and it unwraps to its sentinels.
type detailError struct {
	kinds []error
	msg   string
}

func (e *detailError) Error() string   { return e.msg }
func (e *detailError) Unwrap() []error { return e.kinds }

// Sections of the documents, in the order problems are listed.
const (
	secDocument = iota
	secBenchmarks
	secCategories
	secModels
)

var sectionNames = [...]string{secBenchmarks: "benchmarks", secCategories: "categories", secModels: "models"}

// problem is a Problem with what is needed to sort and merge it.
type problem struct {
	Problem
	file, section, index int // sort key: file 0 is the registry, 1 the categories
	// keyword is the failed schema keyword; "" for the semantic rules.
	keyword string
}

func entryName(section, index int, id string) string {
	if id == "" {
		return fmt.Sprintf("%s[%d]", sectionNames[section], index)
	}
	return fmt.Sprintf("%s[%d] %q", sectionNames[section], index, id)
}

// entryRef locates one list entry of a document.
type entryRef struct {
	file         string
	fileIdx      int
	section, idx int
	name         string
}

func (r *entryRef) entry() string { return entryName(r.section, r.idx, r.name) }

// input is what the semantic rules check: the entries of both documents.
type input struct {
	registryFile, categoriesFile string
	// haveCategories is false when the categories document could not be read
	// (not JSON, or without its lists); the rules that look names up in it are
	// then skipped rather than misreported.
	haveCategories bool

	benchmarks []Benchmark
	benchRefs  []entryRef
	categories []Category
	catRefs    []entryRef
	models     []Model
	modelRefs  []entryRef
}

type checker struct{ out []problem }

func (c *checker) add(r *entryRef, field string, kind error, format string, args ...any) {
	c.out = append(c.out, problem{
		Problem: Problem{File: r.file, Entry: r.entry(), Field: field,
			Err: &detailError{kinds: []error{kind}, msg: fmt.Sprintf(format, args...)}},
		file: r.fileIdx, section: r.section, index: r.idx,
	})
}

// check applies the rules the schema cannot express (references between
// entries and files) and the value rules with their own sentinels.
func check(in *input) []problem {
	var c checker
	declared := map[string]int{}
	for i := range in.benchmarks {
		b, r := &in.benchmarks[i], &in.benchRefs[i]
		if b.Name == "" {
			continue // the schema reports it
		}
		if j, dup := declared[b.Name]; dup {
			c.add(r, "name", ErrDuplicateBenchmark, "benchmark %q is already declared at benchmarks[%d]", b.Name, j)
			continue
		}
		declared[b.Name] = r.idx
	}

	registered := map[string]int{}
	for i := range in.categories {
		cat, r := &in.categories[i], &in.catRefs[i]
		if cat.Name != "" {
			if j, dup := registered[cat.Name]; dup {
				c.add(r, "name", ErrDuplicateCategory, "category %q is already defined at categories[%d]", cat.Name, j)
			} else {
				registered[cat.Name] = r.idx
			}
		}
		if len(cat.Weights) == 0 {
			c.add(r, "weights", ErrEmptyCategory, "weighs no benchmark")
		}
		for _, b := range slices.Sorted(maps.Keys(cat.Weights)) {
			w := cat.Weights[b]
			if _, ok := declared[b]; !ok {
				c.add(r, "weights."+b, ErrUnknownBenchmark, "benchmark %q is not declared in %s", b, in.categoriesFile)
			}
			if !(w >= MinWeight && w <= MaxWeight) {
				c.add(r, "weights."+b, ErrInvalidWeight, "weight %v must be a number from %v to %v", w, MinWeight, MaxWeight)
			}
		}
		for _, b := range slices.Sorted(maps.Keys(cat.Rationale)) {
			if _, ok := cat.Weights[b]; !ok {
				c.add(r, "rationale."+b, ErrUnknownBenchmark, "explains benchmark %q, which the category does not weigh", b)
			}
		}
	}

	ids := map[string]int{}
	for i := range in.models {
		m, r := &in.models[i], &in.modelRefs[i]
		if m.ID != "" {
			if j, dup := ids[m.ID]; dup {
				c.add(r, "id", ErrDuplicateID, "model id %q is already used by models[%d]", m.ID, j)
			} else {
				ids[m.ID] = r.idx
			}
		}
		if m.GPUMemoryMB <= 0 {
			c.add(r, "gpu_memory_mb", ErrInvalidMemory, "gpu memory %d MB must be positive", m.GPUMemoryMB)
		}
		if len(m.OrchestrationCategories) == 0 {
			c.add(r, "orchestration_categories", ErrNoCategories, "lists no orchestration category")
		}
		if in.haveCategories {
			for j, cat := range m.OrchestrationCategories {
				if _, ok := registered[cat]; !ok {
					c.add(r, "orchestration_categories["+strconv.Itoa(j)+"]", ErrUnknownCategory,
						"category %q is not in %s", cat, in.categoriesFile)
				}
			}
		}
		for _, b := range slices.Sorted(maps.Keys(m.Benchmarks)) {
			s := m.Benchmarks[b]
			if in.haveCategories {
				if _, ok := declared[b]; !ok {
					c.add(r, "benchmarks."+b, ErrUnknownBenchmark, "benchmark %q is not declared in %s", b, in.categoriesFile)
				}
			}
			if math.IsNaN(s) || s < 0 || s > 100 {
				c.add(r, "benchmarks."+b, ErrScoreOutOfRange, "score %v is outside 0..100", s)
			}
		}
		for _, cat := range slices.Sorted(maps.Keys(m.Confidence)) {
			v := m.Confidence[cat]
			if math.IsNaN(v) || v <= 0 || v > 1 {
				c.add(r, "confidence."+cat, ErrInvalidConfidence, "confidence %v is outside (0,1]", v)
			}
			if !m.Serves(cat) {
				c.add(r, "confidence."+cat, ErrInvalidConfidence, "overrides category %q, which the model does not list", cat)
			}
		}
	}
	return c.out
}

// violationProblem turns one schema violation found in an entry (or, with a
// nil ref, in the document itself) into a problem. base is the decoded value
// the violation's pointer tokens start from.
func violationProblem(file string, fileIdx int, r *entryRef, base any, toks []string, v schemas.Violation) problem {
	p := problem{
		Problem: Problem{File: file, Field: fieldPath(base, toks, v.Property),
			Err: &detailError{kinds: []error{ErrSchema}, msg: v.Message}},
		file: fileIdx, section: secDocument, index: -1, keyword: v.Keyword,
	}
	if r != nil {
		p.Entry, p.section, p.index = r.entry(), r.section, r.idx
	}
	return p
}

// fieldPath renders pointer tokens as "benchmarks.HumanEval" or
// "orchestration_categories[1]", using the document to tell array indexes
// from object keys.
func fieldPath(base any, toks []string, property string) string {
	var sb strings.Builder
	node := base
	for _, t := range toks {
		switch n := node.(type) {
		case []any:
			sb.WriteString("[" + t + "]")
			if i, err := strconv.Atoi(t); err == nil && i >= 0 && i < len(n) {
				node = n[i]
			} else {
				node = nil
			}
		case map[string]any:
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(t)
			node = n[t]
		default:
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(t)
			node = nil
		}
	}
	if property != "" {
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(property)
	}
	return sb.String()
}

// Keywords of schema problems that are not schema keywords.
const (
	// kwEncode: a Go value could not be encoded as JSON (NaN, ±Inf).
	kwEncode = "(encode)"
	// kwDecode: a document entry that the schema accepts does not decode into
	// its Go type (e.g. 7.0 for an integer field).
	kwDecode = "(decode)"
)

// unreadable reports whether a schema problem means the value at its field
// was not read (missing, wrong type, not decodable): rules then saw a zero
// value there, and their complaints about it are noise.
func (p *problem) unreadable() bool {
	return p.keyword == "required" || p.keyword == "type" || p.keyword == kwDecode
}

// restated lists the schema keywords whose violation a rule at the same
// field restates with its own sentinel (a score above its maximum, an empty
// weights map, a map key that is not a declared name). Other violations,
// e.g. a pattern, are separate faults and stay.
var restated = map[string]bool{
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"minItems": true, "minProperties": true, "additionalProperties": true,
}

// within reports whether field is f or lies under it.
func within(field, f string) bool {
	return f == "" || field == f || strings.HasPrefix(field, f+".") || strings.HasPrefix(field, f+"[")
}

// merge combines schema and rule problems so that each fault is reported
// once: a rule's problem (with its specific sentinel) replaces a restated
// schema violation at the same field; a value that could not be read
// silences the rules at and under its field; an encoding failure is left out
// when the rules explain the entry.
func merge(schemaProbs, ruleProbs []problem) []problem {
	type loc struct{ file, entry, field string }
	unread := map[loc][]string{} // entry -> fields not read
	for _, s := range schemaProbs {
		if s.unreadable() {
			l := loc{s.File, s.Entry, ""}
			unread[l] = append(unread[l], s.Field)
		}
	}
	out := make([]problem, 0, len(schemaProbs)+len(ruleProbs))
	ruled, ruledEntry := map[loc]bool{}, map[loc]bool{}
	for _, r := range ruleProbs {
		if slices.ContainsFunc(unread[loc{r.File, r.Entry, ""}], func(f string) bool { return within(r.Field, f) }) {
			continue
		}
		out = append(out, r)
		ruled[loc{r.File, r.Entry, r.Field}] = true
		ruledEntry[loc{r.File, r.Entry, ""}] = true
	}
	for _, s := range schemaProbs {
		switch {
		case s.keyword == kwEncode && ruledEntry[loc{s.File, s.Entry, ""}]:
		case restated[s.keyword] && ruled[loc{s.File, s.Entry, s.Field}]:
		default:
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b problem) int {
		return cmp.Or(
			cmp.Compare(a.file, b.file),
			cmp.Compare(a.section, b.section),
			cmp.Compare(a.index, b.index),
			strings.Compare(a.Field, b.Field),
			strings.Compare(a.Err.Error(), b.Err.Error()),
		)
	})
	return out
}

func newValidationError(probs []problem) *ValidationError {
	e := &ValidationError{Problems: make([]Problem, len(probs))}
	for i, p := range probs {
		e.Problems[i] = p.Problem
	}
	return e
}

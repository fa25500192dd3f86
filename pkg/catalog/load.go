package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/nlocalmodels/orchestrator/schemas"
)

// Load reads and parses the registry and categories files. A file that
// cannot be read gives an error wrapping ErrReadFile that names its path.
func Load(registryPath, categoriesPath string) (*Catalog, error) {
	registry, errR := os.ReadFile(registryPath)
	categories, errC := os.ReadFile(categoriesPath)
	if errR != nil || errC != nil {
		var errs []error
		for _, err := range []error{errR, errC} {
			if err != nil {
				// os errors name the path: "open /etc/orch/MODEL_REGISTRY.json: no such file or directory".
				errs = append(errs, fmt.Errorf("%w: %w", ErrReadFile, err))
			}
		}
		return nil, errors.Join(errs...)
	}
	return Parse(registryPath, registry, categoriesPath, categories)
}

// Parse validates both documents against their schemas, decodes them and
// applies the catalog rules. registryName and categoriesName name the
// documents in problems. It returns a *ValidationError listing every problem
// of both documents.
func Parse(registryName string, registry []byte, categoriesName string, categories []byte) (*Catalog, error) {
	in := &input{registryFile: registryName, categoriesFile: categoriesName}
	var probs []problem

	regDoc, p := readDoc(registryName, 0, schemas.ModelRegistryFile, registry)
	probs = append(probs, p...)
	var dp []problem
	in.models, in.modelRefs, dp, _ = decodeSection[Model](regDoc, registryName, 0, secModels, probs)
	probs = append(probs, dp...)

	catDoc, p := readDoc(categoriesName, 1, schemas.TaskCategoriesFile, categories)
	probs = append(probs, p...)
	var okB, okC bool
	in.benchmarks, in.benchRefs, dp, okB = decodeSection[Benchmark](catDoc, categoriesName, 1, secBenchmarks, probs)
	probs = append(probs, dp...)
	in.categories, in.catRefs, dp, okC = decodeSection[Category](catDoc, categoriesName, 1, secCategories, probs)
	probs = append(probs, dp...)
	in.haveCategories = okB && okC

	if all := merge(probs, check(in)); len(all) > 0 {
		return nil, newValidationError(all)
	}
	return assemble(in), nil
}

// sectionByName maps a document's list property to its section.
var sectionByName = map[string]int{"benchmarks": secBenchmarks, "categories": secCategories, "models": secModels}

// idKey is the property that names an entry of the section.
func idKey(section int) string {
	if section == secModels {
		return "id"
	}
	return "name"
}

func rawRef(file string, fileIdx, section, idx int, elem any) entryRef {
	obj, _ := elem.(map[string]any)
	name, _ := obj[idKey(section)].(string)
	return entryRef{file: file, fileIdx: fileIdx, section: section, idx: idx, name: name}
}

func docProblem(file string, fileIdx int, kinds []error, msg string) problem {
	return problem{
		Problem: Problem{File: file, Err: &detailError{kinds: kinds, msg: msg}},
		file:    fileIdx, section: secDocument, index: -1,
	}
}

// readDoc checks a document against its schema and returns it decoded (nil
// when it is not JSON) with one problem per violation.
func readDoc(file string, fileIdx int, name schemas.Name, data []byte) (map[string]any, []problem) {
	v, err := schemas.Decode(data)
	if err != nil {
		return nil, []problem{docProblem(file, fileIdx, []error{ErrSchema, err}, err.Error())}
	}
	err = schemas.ValidateValue(name, v)
	var verr *schemas.ValidationError
	if err != nil && !errors.As(err, &verr) {
		return nil, []problem{docProblem(file, fileIdx, []error{ErrSchema, err}, err.Error())}
	}
	doc, _ := v.(map[string]any)
	if verr == nil {
		return doc, nil
	}
	probs := make([]problem, 0, len(verr.Violations))
	for _, viol := range verr.Violations {
		toks := pointerTokens(viol.Pointer)
		if len(toks) >= 2 {
			if sec, ok := sectionByName[toks[0]]; ok {
				list, _ := doc[toks[0]].([]any)
				if i, err := strconv.Atoi(toks[1]); err == nil && i >= 0 && i < len(list) {
					r := rawRef(file, fileIdx, sec, i, list[i])
					probs = append(probs, violationProblem(file, fileIdx, &r, list[i], toks[2:], viol))
					continue
				}
			}
		}
		probs = append(probs, violationProblem(file, fileIdx, nil, v, toks, viol))
	}
	return doc, probs
}

// decodeSection decodes the entries of one list of a document, each as far
// as it goes (encoding/json skips a value of the wrong type and goes on). An
// entry the schema found nothing wrong with is decoded strictly, unknown
// fields refused. A decoding failure the schema did not explain (e.g. 7.0
// for an integer) is reported, so that no value is silently read as zero. ok
// is false when the list is missing or not a list.
func decodeSection[T any](doc map[string]any, file string, fileIdx, section int, schemaProbs []problem) (vals []T, refs []entryRef, probs []problem, ok bool) {
	list, ok := doc[sectionNames[section]].([]any)
	if !ok {
		return nil, nil, nil, false
	}
	flagged := map[int]bool{}
	typeErrs := map[int][]string{} // entry index -> fields with a schema type violation
	for _, p := range schemaProbs {
		if p.file == fileIdx && p.section == section {
			flagged[p.index] = true
			if p.keyword == "type" {
				typeErrs[p.index] = append(typeErrs[p.index], p.Field)
			}
		}
	}
	vals, refs = make([]T, len(list)), make([]entryRef, len(list))
	for i, elem := range list {
		refs[i] = rawRef(file, fileIdx, section, i, elem)
		raw, err := json.Marshal(elem)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(raw))
			if !flagged[i] {
				dec.DisallowUnknownFields()
			}
			err = dec.Decode(&vals[i])
		}
		if err == nil {
			continue
		}
		var field string
		if ute := (*json.UnmarshalTypeError)(nil); errors.As(err, &ute) {
			field = ute.Field // dotted JSON names: our notation, minus indexes and keys
		}
		if slices.ContainsFunc(typeErrs[i], func(f string) bool { return within(f, field) }) {
			continue // the schema already said what is wrong there
		}
		probs = append(probs, problem{
			Problem: Problem{File: file, Entry: refs[i].entry(), Field: field,
				Err: &detailError{kinds: []error{ErrSchema}, msg: "cannot be decoded: " + err.Error()}},
			file: fileIdx, section: section, index: i, keyword: kwDecode,
		})
	}
	return vals, refs, probs, true
}

// entrySchemaProblems checks one Go entry against its schema.
func entrySchemaProblems(r *entryRef, v any) []problem {
	name := map[int]schemas.Name{secBenchmarks: schemas.Benchmark, secCategories: schemas.Category, secModels: schemas.Model}[r.section]
	entryProblem := func(kw, msg string, kinds ...error) []problem {
		return []problem{{
			Problem: Problem{File: r.file, Entry: r.entry(), Err: &detailError{kinds: kinds, msg: msg}},
			file:    r.fileIdx, section: r.section, index: r.idx, keyword: kw,
		}}
	}
	raw, err := json.Marshal(v)
	var doc any
	if err == nil {
		doc, err = schemas.Decode(raw)
	}
	if err != nil {
		return entryProblem(kwEncode, "cannot be encoded as JSON: "+err.Error(), ErrSchema)
	}
	err = schemas.ValidateValue(name, doc)
	var verr *schemas.ValidationError
	if err == nil {
		return nil
	}
	if !errors.As(err, &verr) {
		return entryProblem("", err.Error(), ErrSchema, err)
	}
	probs := make([]problem, 0, len(verr.Violations))
	for _, viol := range verr.Violations {
		probs = append(probs, violationProblem(r.file, r.fileIdx, r, doc, pointerTokens(viol.Pointer), viol))
	}
	return probs
}

// pointerTokens splits an RFC 6901 JSON pointer into unescaped tokens.
func pointerTokens(ptr string) []string {
	if ptr == "" {
		return nil
	}
	toks := strings.Split(ptr[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks
}

package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fixture returns testdata/valid/<name>.json decoded with json.Number.
func fixture(t *testing.T, n Name) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "valid", string(n)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// edit is one change to a fixture: set the value at a JSON pointer, or
// delete it when del is true.
type edit struct {
	ptr string
	val any
	del bool
}

func set(ptr string, val any) edit { return edit{ptr: ptr, val: val} }
func del(ptr string) edit          { return edit{ptr: ptr, del: true} }

func apply(t *testing.T, doc any, e edit) any {
	t.Helper()
	toks := strings.Split(e.ptr, "/")[1:]
	if len(toks) == 0 {
		return e.val
	}
	node := doc
	for i, tok := range toks {
		last := i == len(toks)-1
		switch n := node.(type) {
		case map[string]any:
			if last {
				if e.del {
					delete(n, tok)
				} else {
					n[tok] = e.val
				}
				return doc
			}
			node = n[tok]
		case []any:
			idx, err := strconv.Atoi(tok)
			if err != nil || idx >= len(n) || e.del && last {
				t.Fatalf("bad edit pointer %q", e.ptr)
			}
			if last {
				n[idx] = e.val
				return doc
			}
			node = n[idx]
		default:
			t.Fatalf("bad edit pointer %q", e.ptr)
		}
	}
	return doc
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEverySchemaCompilesAndIsEmbedded(t *testing.T) {
	if _, err := compileAll(); err != nil {
		t.Fatal(err)
	}
	embedded, err := fs.Glob(Files(), "*")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range All() {
		want = append(want, n.File())
	}
	slices.Sort(want)
	if !slices.Equal(embedded, want) {
		t.Fatalf("embedded files %v, want one per Name %v", embedded, want)
	}
	for _, n := range All() {
		t.Run(string(n), func(t *testing.T) {
			src, err := Source(n)
			if err != nil {
				t.Fatal(err)
			}
			var head struct {
				Schema string `json:"$schema"`
				ID     string `json:"$id"`
			}
			if err := json.Unmarshal(src, &head); err != nil {
				t.Fatal(err)
			}
			if head.ID != n.ID() || head.Schema != "https://json-schema.org/draft/2020-12/schema" {
				t.Fatalf("$id %q $schema %q, want %q and draft 2020-12", head.ID, head.Schema, n.ID())
			}
			if bytes.Contains(src, []byte(`"propertyNames"`)) {
				t.Fatal("uses propertyNames, which jsonschema v6.0.3 reports at a wrong location; use patternProperties")
			}
		})
	}
}

// Map keys are checked with a copy of the name patterns (patternProperties
// cannot $ref); the copies must stay equal to the definitions.
func TestMapKeyPatternsMatchNameDefinitions(t *testing.T) {
	defPattern := func(n Name, def string) string {
		var s struct {
			Defs map[string]struct {
				Pattern string `json:"pattern"`
			} `json:"$defs"`
		}
		src, _ := Source(n)
		if err := json.Unmarshal(src, &s); err != nil {
			t.Fatal(err)
		}
		return s.Defs[def].Pattern
	}
	benchmark, category := defPattern(Benchmark, "name"), defPattern(Category, "name")
	for _, tc := range []struct {
		schema Name
		prop   string
		want   string
	}{
		{Model, "benchmarks", benchmark},
		{Model, "confidence", category},
		{Category, "weights", benchmark},
		{Category, "rationale", benchmark},
	} {
		t.Run(string(tc.schema)+"/"+tc.prop, func(t *testing.T) {
			var s struct {
				Properties map[string]struct {
					PatternProperties map[string]any `json:"patternProperties"`
				} `json:"properties"`
			}
			src, _ := Source(tc.schema)
			if err := json.Unmarshal(src, &s); err != nil {
				t.Fatal(err)
			}
			pp := s.Properties[tc.prop].PatternProperties
			if _, ok := pp[tc.want]; !ok || len(pp) != 1 || tc.want == "" {
				t.Fatalf("patternProperties %v, want only %q", pp, tc.want)
			}
		})
	}
}

func TestValidFixturesPass(t *testing.T) {
	for _, n := range All() {
		t.Run(string(n), func(t *testing.T) {
			doc := fixture(t, n)
			if err := Validate(n, mustMarshal(t, doc)); err != nil {
				t.Fatal(err)
			}
			if err := ValidateValue(n, doc); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestInvalidDocumentsFailAtPointer(t *testing.T) {
	long := strings.Repeat("x", 257)
	many := make([]any, 257)
	for i := range many {
		many[i] = "m" + strconv.Itoa(i)
	}
	tests := []struct {
		name    string
		schema  Name
		edits   []edit
		pointer string
		keyword string
	}{
		{"model score above 100", Model, []edit{set("/benchmarks/HumanEval", 120)}, "/benchmarks/HumanEval", "maximum"},
		{"model negative score", Model, []edit{set("/benchmarks/MBPP", -1)}, "/benchmarks/MBPP", "minimum"},
		{"model bad benchmark key", Model, []edit{set("/benchmarks/Human Eval", 50)}, "/benchmarks", "additionalProperties"},
		{"model zero memory", Model, []edit{set("/gpu_memory_mb", 0)}, "/gpu_memory_mb", "minimum"},
		{"model fractional memory", Model, []edit{set("/gpu_memory_mb", 1.5)}, "/gpu_memory_mb", "type"},
		{"model uppercase id", Model, []edit{set("/id", "Qwen")}, "/id", "pattern"},
		{"model id too long", Model, []edit{set("/id", strings.Repeat("a", 129))}, "/id", "pattern"},
		{"model without categories", Model, []edit{set("/orchestration_categories", []any{})}, "/orchestration_categories", "minItems"},
		{"model repeated category", Model, []edit{set("/orchestration_categories", []any{"code", "code"})}, "/orchestration_categories", "uniqueItems"},
		{"model category with dot", Model, []edit{set("/orchestration_categories/1", "a.b")}, "/orchestration_categories/1", "pattern"},
		{"model confidence zero", Model, []edit{set("/confidence/reasoning", 0)}, "/confidence/reasoning", "exclusiveMinimum"},
		{"model confidence above 1", Model, []edit{set("/confidence/reasoning", 1.01)}, "/confidence/reasoning", "maximum"},
		{"model confidence wildcard key", Model, []edit{set("/confidence/>", 0.5)}, "/confidence", "additionalProperties"},
		{"model unknown field", Model, []edit{set("/vram", 1)}, "", "additionalProperties"},
		{"model missing source", Model, []edit{del("/source")}, "", "required"},
		{"model empty family", Model, []edit{set("/family", "")}, "/family", "minLength"},
		{"model disabled not bool", Model, []edit{set("/disabled", "yes")}, "/disabled", "type"},
		{"registry file version 2", ModelRegistryFile, []edit{set("/version", 2)}, "/version", "const"},
		{"registry file model score", ModelRegistryFile, []edit{set("/models/1/benchmarks/GSM8K", 101)}, "/models/1/benchmarks/GSM8K", "maximum"},
		{"registry file models null", ModelRegistryFile, []edit{set("/models", nil)}, "/models", "type"},
		{"benchmark empty metric", Benchmark, []edit{set("/metric", "")}, "/metric", "minLength"},
		{"benchmark name with space", Benchmark, []edit{set("/name", "Human Eval")}, "/name", "pattern"},
		{"category name with dot", Category, []edit{set("/name", "code.review")}, "/name", "pattern"},
		{"category name with wildcard", Category, []edit{set("/name", "*")}, "/name", "pattern"},
		{"category zero weight", Category, []edit{set("/weights/MBPP", 0)}, "/weights/MBPP", "minimum"},
		{"category no weights", Category, []edit{set("/weights", map[string]any{})}, "/weights", "minProperties"},
		{"category empty rationale", Category, []edit{set("/rationale/HumanEval", "")}, "/rationale/HumanEval", "minLength"},
		{"categories file duplicate field", TaskCategoriesFile, []edit{set("/categories/1/weights/MATH", -1.5)}, "/categories/1/weights/MATH", "minimum"},
		{"categories file benchmark missing name", TaskCategoriesFile, []edit{del("/benchmarks/2/name")}, "/benchmarks/2", "required"},
		{"config bad mode", SelectionConfig, []edit{set("/default_mode", "fastest")}, "/default_mode", "enum"},
		{"config confidence zero", SelectionConfig, []edit{set("/confidence/secondary", 0)}, "/confidence/secondary", "exclusiveMinimum"},
		{"config negative placement", SelectionConfig, []edit{set("/placement/headroom", -0.1)}, "/placement/headroom", "minimum"},
		{"config stale zero", SelectionConfig, []edit{set("/stale_after_ms", 0)}, "/stale_after_ms", "minimum"},
		{"config tie epsilon 1", SelectionConfig, []edit{set("/tie_epsilon", 1)}, "/tie_epsilon", "exclusiveMaximum"},
		{"config too many alternatives", SelectionConfig, []edit{set("/alternatives", 11)}, "/alternatives", "maximum"},
		{"config missing switch", SelectionConfig, []edit{del("/gpu_aware")}, "", "required"},
		{"request empty task_category", SelectionRequest, []edit{set("/task_category", "")}, "/task_category", "pattern"},
		{"request missing task_category", SelectionRequest, []edit{del("/task_category")}, "", "required"},
		{"request bad mode", SelectionRequest, []edit{set("/mode", "fast")}, "/mode", "enum"},
		{"request too many allowed models", SelectionRequest, []edit{set("/constraints/allow_models", many)}, "/constraints/allow_models", "maxItems"},
		{"request bad denied model", SelectionRequest, []edit{set("/constraints/deny_models/0", "Bad Id")}, "/constraints/deny_models/0", "pattern"},
		{"request long request_id", SelectionRequest, []edit{set("/request_id", long)}, "/request_id", "maxLength"},
		{"request host with dot", SelectionRequest, []edit{set("/constraints/hosts/0", "gpu.example.com")}, "/constraints/hosts/0", "pattern"},
		{"request min_score above 1", SelectionRequest, []edit{set("/constraints/min_score", 1.5)}, "/constraints/min_score", "maximum"},
		{"request utilization above 100", SelectionRequest, []edit{set("/constraints/max_utilization_pct", 101)}, "/constraints/max_utilization_pct", "maximum"},
		{"request unknown constraint", SelectionRequest, []edit{set("/constraints/max_price", 1)}, "/constraints", "additionalProperties"},
		{"reply final score above 1", SelectionReply, []edit{set("/final_score", 1.2)}, "/final_score", "maximum"},
		{"reply negative quality", SelectionReply, []edit{set("/scores/quality", -0.1)}, "/scores/quality", "minimum"},
		{"reply alternative gpu index", SelectionReply, []edit{set("/alternatives/0/gpu/index", -1)}, "/alternatives/0/gpu/index", "minimum"},
		{"reply tie seed above uint64", SelectionReply, []edit{set("/tie_seed", json.Number("18446744073709551616"))}, "/tie_seed", "maximum"},
		{"reply bad timestamp", SelectionReply, []edit{set("/timestamp", "yesterday")}, "/timestamp", "format"},
		{"reply zero candidates", SelectionReply, []edit{set("/candidates", 0)}, "/candidates", "minimum"},
		{"reply telemetry age below -1", SelectionReply, []edit{set("/telemetry_age_ms", -2)}, "/telemetry_age_ms", "minimum"},
		{"reply empty reason", SelectionReply, []edit{set("/reason", "")}, "/reason", "minLength"},
		{"gpu sample utilization 150", GPUSample, []edit{set("/utilization_gpu_pct", 150)}, "/utilization_gpu_pct", "maximum"},
		{"gpu sample negative free memory", GPUSample, []edit{set("/memory_free_mb", -1)}, "/memory_free_mb", "minimum"},
		{"gpu sample bad source", GPUSample, []edit{set("/source", "dcgm")}, "/source", "enum"},
		{"gpu sample host with dot", GPUSample, []edit{set("/host", "node1.example.com")}, "/host", "pattern"},
		{"gpu sample timestamp without zone", GPUSample, []edit{set("/timestamp", "2025-11-25T21:30:00")}, "/timestamp", "format"},
		{"gpu sample repeated failed read", GPUSample, []edit{set("/failed_reads", []any{"power", "power"})}, "/failed_reads", "uniqueItems"},
		{"event missing event_id", SelectionEvent, []edit{del("/event_id")}, "", "required"},
		{"event confidence above 1", SelectionEvent, []edit{set("/confidence_score", 1.5)}, "/confidence_score", "maximum"},
		{"event request empty category", SelectionEvent, []edit{set("/request/task_category", "")}, "/request/task_category", "pattern"},
		{"event request unknown field", SelectionEvent, []edit{set("/request/priority", 1)}, "/request", "additionalProperties"},
		{"event bad mode", SelectionEvent, []edit{set("/mode", "GPU_AWARE")}, "/mode", "enum"},
		{"event alternatives not list", SelectionEvent, []edit{set("/alternatives", map[string]any{})}, "/alternatives", "type"},
		{"event gpu id negative", SelectionEvent, []edit{set("/gpu_id", -1)}, "/gpu_id", "minimum"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := fixture(t, tc.schema)
			for _, e := range tc.edits {
				doc = apply(t, doc, e)
			}
			err := Validate(tc.schema, mustMarshal(t, doc))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("err %T is not a *ValidationError", err)
			}
			if verr.Schema != tc.schema || len(verr.Violations) != 1 {
				t.Fatalf("schema %q violations %+v, want one violation of %q", verr.Schema, verr.Violations, tc.schema)
			}
			v := verr.Violations[0]
			if v.Pointer != tc.pointer || v.Keyword != tc.keyword || v.Message == "" {
				t.Fatalf("violation %+v, want pointer %q keyword %q", v, tc.pointer, tc.keyword)
			}
			if !strings.Contains(err.Error(), string(tc.schema)) || !strings.Contains(err.Error(), v.Location()) {
				t.Fatalf("error %q does not name schema %q and pointer %q", err, tc.schema, v.Location())
			}
		})
	}
}

func TestEveryViolationIsReported(t *testing.T) {
	doc := fixture(t, ModelRegistryFile)
	for _, e := range []edit{
		set("/version", 3),
		set("/models/0/benchmarks/HumanEval", 120),
		set("/models/0/gpu_memory_mb", 0),
		del("/models/1/source"),
		del("/models/1/name"),
		set("/models/1/orchestration_categories/0", "Math"),
		set("/models/1/colour", "blue"),
	} {
		doc = apply(t, doc, e)
	}
	err := Validate(ModelRegistryFile, mustMarshal(t, doc))
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	type got struct{ ptr, kw, prop string }
	want := []got{
		{"/models/0/benchmarks/HumanEval", "maximum", ""},
		{"/models/0/gpu_memory_mb", "minimum", ""},
		{"/models/1", "additionalProperties", "colour"},
		{"/models/1", "required", "name"},
		{"/models/1", "required", "source"},
		{"/models/1/orchestration_categories/0", "pattern", ""},
		{"/version", "const", ""},
	}
	var have []got
	for _, v := range verr.Violations {
		have = append(have, got{v.Pointer, v.Keyword, v.Property})
	}
	if !slices.Equal(have, want) {
		t.Fatalf("violations\n%+v\nwant\n%+v", have, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w.ptr) {
			t.Errorf("error %q does not name %s", err, w.ptr)
		}
	}
}

func TestMalformedJSON(t *testing.T) {
	for _, tc := range []struct {
		doc    string
		offset string
	}{
		{``, "byte 0"},
		{`{"id": "a",}`, "byte 12"},
		{`{"id": "a"`, "byte 10"},
		{`{"id": "a"} {}`, "byte 12"},
		{`[1, 2] x`, "byte 7"},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			err := Validate(Model, []byte(tc.doc))
			if !errors.Is(err, ErrMalformedJSON) || errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrMalformedJSON only", err)
			}
			if !strings.Contains(err.Error(), tc.offset) {
				t.Fatalf("error %q does not give %s", err, tc.offset)
			}
		})
	}
}

// A key given twice in one object is refused where it is: decoding would
// keep the last silently. The same key in different objects is fine.
func TestDuplicateKeys(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{`{"id": "a", "id": "b"}`, `byte 16: key "id" appears twice`},
		{`{"a": {"b": 1, "b": 2}}`, `byte 18: key "b" appears twice`},
		{`[{"x": [1, {"y": 1}], "y": 2, "x": 3}]`, `key "x" appears twice`},
		{`[{"id": 1}, {"id": 2}]`, ""},
		{`{"a": {"id": 1}, "b": {"id": 1}, "id": [{"id": 2}]}`, ""},
		{`"{\"id\": 1, \"id\": 2}"`, ""},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformedJSON) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrMalformedJSON saying %q", err, tc.want)
			}
		})
	}
}

// Numbers no float64 holds are refused where they are, before the
// validator's exact arithmetic meets them (1e9999999 made it dereference
// nil); a large bound violation stays short.
func TestHugeNumbers(t *testing.T) {
	for _, tc := range []struct {
		number, want string
	}{
		{"1e9999999", "/weights/MBPP: number 1e9999999 is beyond what a float64 holds"},
		{"-1E-9999999", "/weights/MBPP: number -1E-9999999 is beyond what a float64 holds"},
		{"1" + strings.Repeat("0", 400), "is beyond what a float64 holds"},
		{"1e300", "maximum: got 1e+300, want at most 1000"},
	} {
		t.Run(tc.number[:min(len(tc.number), 12)], func(t *testing.T) {
			err := Validate(Category, []byte(`{"name": "c", "description": "d", "weights": {"MBPP": `+tc.number+`}}`))
			var verr *ValidationError
			if !errors.As(err, &verr) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 300 {
				t.Fatalf("err = %.300v, want a short *ValidationError saying %q", err, tc.want)
			}
		})
	}
}

func TestUnknownSchema(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Validate", func() error { return Validate("models", []byte(`{}`)) }},
		{"ValidateValue", func() error { return ValidateValue("", map[string]any{}) }},
		{"Source", func() error { _, err := Source("model.schema.json"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrUnknownSchema) {
				t.Fatalf("err = %v, want ErrUnknownSchema", err)
			}
		})
	}
}

// Decoding without UseNumber yields float64 numbers, which are accepted too.
func TestValidateValueWithFloatNumbers(t *testing.T) {
	var v any
	if err := json.Unmarshal([]byte(`{"utilization_gpu_pct": 150}`), &v); err != nil {
		t.Fatal(err)
	}
	var verr *ValidationError
	if err := ValidateValue(GPUSample, v); !errors.As(err, &verr) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	i := slices.IndexFunc(verr.Violations, func(v Violation) bool { return v.Pointer == "/utilization_gpu_pct" })
	if i < 0 || verr.Violations[i].Keyword != "maximum" {
		t.Fatalf("violations %+v, want maximum at /utilization_gpu_pct", verr.Violations)
	}
}

func TestKeyPatternMessage(t *testing.T) {
	err := Validate(Category, []byte(`{"name":"code","description":"d","weights":{"Human Eval":1}}`))
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Violations) != 1 {
		t.Fatalf("err = %v, want one violation", err)
	}
	if v := verr.Violations[0]; v.Property != "Human Eval" || !strings.Contains(v.Message, `key "Human Eval" does not match ^`) {
		t.Fatalf("violation %+v, want a bad-key message", v)
	}
}

// A failed bound says which way it bounds ("exclusiveMinimum: got 0, want
// 0" told nobody anything).
func TestBoundMessagesSayWhichWay(t *testing.T) {
	tests := []struct {
		name string
		edit edit
		want string
	}{
		{"exclusive minimum", set("/confidence/secondary", 0), "exclusiveMinimum: got 0, want more than 0"},
		{"exclusive maximum", set("/tie_epsilon", 1), "exclusiveMaximum: got 1, want less than 1"},
		{"maximum", set("/alternatives", 11), "maximum: got 11, want at most 10"},
		{"minimum", set("/stale_after_ms", 0), "minimum: got 0, want at least 1"},
		{"large integers as integers", set("/stale_after_ms", 86400001), "maximum: got 86400001, want at most 86400000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(SelectionConfig, mustMarshal(t, apply(t, fixture(t, SelectionConfig), tc.edit)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

package schematest

import (
	"encoding/json"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
	"github.com/nlocalmodels/orchestrator/schemas"
)

var (
	when = time.Date(2025, 11, 25, 21, 30, 0, 123456789, time.UTC)

	model = catalog.Model{
		ID: "qwen2.5-coder-7b-instruct-q4_k_m", Name: "Qwen2.5-Coder 7B Instruct", Family: "qwen2.5-coder",
		ParametersB: 7.6, Quantization: "q4_k_m", GPUMemoryMB: 6144, ContextLength: 32768,
		OrchestrationCategories: []string{"code", "reasoning"},
		Benchmarks:              map[string]float64{"HumanEval": 88.4, "MBPP": 83.5},
		Confidence:              map[string]float64{"reasoning": 0.6},
		Source:                  "Qwen2.5-Coder Technical Report", License: "Apache-2.0", Disabled: true,
	}
	benchmark = catalog.Benchmark{Name: "HumanEval", Description: "164 Python problems.", Metric: "pass@1 %"}
	category  = catalog.Category{
		Name: "code", Description: "Writing and fixing code.",
		Weights:   map[string]float64{"HumanEval": 1.0, "MBPP": 0.8},
		Rationale: map[string]string{"HumanEval": "Function-level synthesis is the core of code tasks."},
	}
	request = selection.Request{
		RequestID: "nflow-42", TaskCategory: "code", Mode: selection.ModeGPUAware,
		Constraints: selection.Constraints{
			MaxGPUMemoryMB: 16384, AllowModels: []string{model.ID}, DenyModels: []string{"llama-3.1-8b-instruct-q4_k_m"},
			MinContextLength: 8192, MinScore: 0.5, Quantizations: []string{"q4_k_m"}, Hosts: []string{"gpu-node-1"},
			MaxTemperatureC: 80, MaxUtilizationPct: 90,
		},
	}
	gpu    = &selection.GPURef{Host: "gpu-node-1", Index: 1, UUID: "GPU-5f1c2d3e-0000-1111-2222-333344445555", Name: "NVIDIA H100 80GB HBM3"}
	scores = selection.Scores{Quality: 0.86, Confidence: 0.9, Placement: 0.92, Utilization: 0.9, Headroom: 0.95, Temperature: 0.93}
	alt    = selection.Alternative{ModelID: "llama-3.1-8b-instruct-q4_k_m", GPU: gpu, FinalScore: 0.52, Scores: scores}
	reply  = selection.Reply{
		RequestID: "nflow-42", EventID: "01JDQ0Z8K3M4N5P6Q7R8S9T0VW", TaskCategory: "code",
		RequestedMode: selection.ModeGPUAware, Mode: selection.ModeGPUAware, Degraded: true,
		ModelID: model.ID, ModelName: model.Name, Quantization: model.Quantization, GPUMemoryMB: model.GPUMemoryMB,
		PrimaryCategory: true, GPU: gpu, FinalScore: 0.71, Scores: scores, Reason: "best code quality",
		Alternatives: []selection.Alternative{alt}, TelemetryAgeMs: 812.5, Candidates: 4,
		SelectionDurationUs: 41.3, TieSeed: 1<<64 - 1, Timestamp: when,
	}
	gpuID  = 1
	sample = telemetry.Sample{
		Host: "gpu-node-1", Index: 1, UUID: gpu.UUID, Name: gpu.Name, Timestamp: when, Source: "nvml",
		MemoryTotalMB: 81559, MemoryUsedMB: 20480, MemoryFreeMB: 61079, UtilizationGPUPct: 37,
		UtilizationMemoryPct: 21.5, TemperatureC: 54, PowerW: 312.4, PowerLimitW: 700, Healthy: true,
		HealthReason: "Xid 79: GPU has fallen off the bus", LastXid: 79, FailedReads: []string{"power"},
	}
	event = events.SelectionEvent{
		Timestamp: when, TaskCategory: "code", SelectedModel: model.ID, PrimaryCategory: true,
		ConfidenceScore: 0.9, FinalScore: 0.71, GPUID: &gpuID, SelectionDurationMs: 0.0413,
		EventID: reply.EventID, RequestID: "nflow-42", Host: "gpu-node-1", GPUUUID: gpu.UUID,
		RequestedMode: selection.ModeGPUAware, Mode: selection.ModeGPUAware, Degraded: true,
		Reason: "best code quality", Scores: scores, Alternatives: []selection.Alternative{alt},
		TelemetryAgeMs: 812.5, Selector: "selector-7f9c", Request: request, TieSeed: 7,
		GPUs: []events.GPUState{{Sample: sample, ReservedMB: 20000}},
	}
)

// documents pairs each schema with its Go type and a representative value.
var documents = []struct {
	schema schemas.Name
	value  any
	// full: every field is set, so that every property of the schema is exercised.
	full bool
}{
	{schemas.ModelRegistryFile, catalog.RegistryFile{Version: 1, Models: []catalog.Model{model}}, true},
	{schemas.TaskCategoriesFile, catalog.CategoriesFile{Version: 1, Benchmarks: []catalog.Benchmark{benchmark}, Categories: []catalog.Category{category}}, true},
	{schemas.Model, model, true},
	{schemas.Category, category, true},
	{schemas.Benchmark, benchmark, true},
	{schemas.SelectionConfig, selection.DefaultConfig(), false},
	{schemas.SelectionRequest, request, true},
	{schemas.SelectionReply, reply, true},
	{schemas.GPUSample, sample, true},
	{schemas.SelectionEvent, event, true},
}

func TestRepresentativeValuesMatchTheirSchemas(t *testing.T) {
	covered := map[schemas.Name]bool{}
	for _, d := range documents {
		covered[d.schema] = true
		t.Run(string(d.schema), func(t *testing.T) {
			if d.full {
				if path, ok := zeroField(reflect.ValueOf(d.value), ""); ok {
					t.Fatalf("representative value leaves %s unset; set it so the schema sees it", path)
				}
			}
			b, err := json.Marshal(d.value)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Validate(d.schema, b); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, n := range schemas.All() {
		if !covered[n] {
			t.Errorf("schema %s has no Go value in this test", n)
		}
	}
}

// Go encodes what it has no value for as null or leaves it out; both must be
// accepted where the Go type allows them.
func TestSparseValuesMatchTheirSchemas(t *testing.T) {
	noGPU := reply
	noGPU.GPU, noGPU.Alternatives, noGPU.Degraded, noGPU.TelemetryAgeMs, noGPU.RequestID = nil, nil, true, -1, ""
	noGPUEvent := event
	noGPUEvent.GPUID, noGPUEvent.Host, noGPUEvent.GPUUUID, noGPUEvent.Alternatives = nil, "", "", nil
	for _, d := range []struct {
		name   string
		schema schemas.Name
		value  any
	}{
		{"reply without GPU", schemas.SelectionReply, noGPU},
		{"event without GPU", schemas.SelectionEvent, noGPUEvent},
		{"bare request", schemas.SelectionRequest, selection.Request{TaskCategory: "code"}},
		{"sample without optional reads", schemas.GPUSample, telemetry.Sample{Host: "h", Timestamp: when, Source: "simulated"}},
	} {
		t.Run(d.name, func(t *testing.T) {
			b, err := json.Marshal(d.value)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Validate(d.schema, b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// zeroField returns the path of the first zero field of v, if any.
func zeroField(v reflect.Value, path string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return path, true
		}
		return zeroField(v.Elem(), path)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return path, v.IsZero()
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if p, ok := zeroField(v.Field(i), path+"."+f.Name); ok {
				return p, true
			}
		}
		return "", false
	case reflect.Slice:
		if v.Len() == 0 {
			return path, true
		}
		return zeroField(v.Index(0), path+"[0]")
	case reflect.Map:
		return path, v.Len() == 0
	default:
		return path, v.IsZero()
	}
}

// schemaSet resolves $refs across the embedded schema documents.
type schemaSet map[string]map[string]any

func loadSchemas(t *testing.T) schemaSet {
	t.Helper()
	set := schemaSet{}
	for _, n := range schemas.All() {
		b, err := fs.ReadFile(schemas.Files(), n.File())
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		set[n.ID()] = doc
	}
	return set
}

// resolve follows $ref from node (in the document with id base) to the
// schema it names, and returns that schema and its document id.
func (s schemaSet) resolve(t *testing.T, base string, node map[string]any) (string, map[string]any) {
	t.Helper()
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return base, node
		}
		file, frag, _ := strings.Cut(ref, "#")
		if file != "" {
			base = schemas.BaseURI + file
		}
		var cur any = s[base]
		for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
			if tok == "" {
				continue
			}
			m, _ := cur.(map[string]any)
			cur = m[tok]
		}
		next, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("cannot resolve $ref %q from %s", ref, base)
		}
		node = next
	}
}

func types(node map[string]any) []string {
	switch v := node["type"].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, x.(string))
		}
		return out
	}
	return nil
}

// jsonType is the JSON Schema type a Go type encodes to.
func jsonType(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return "unsupported " + t.Kind().String()
}

// agree checks that Go type typ and schema node describe the same JSON:
// same type, and for structs the same properties, required exactly when not
// omitempty, recursively.
func (s schemaSet) agree(t *testing.T, path string, typ reflect.Type, base string, node map[string]any) {
	t.Helper()
	base, node = s.resolve(t, base, node)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := jsonType(typ)
	if !slices.Contains(types(node), want) {
		t.Errorf("%s: Go %s encodes to %s, schema says %v", path, typ, want, types(node))
		return
	}
	if typ == reflect.TypeFor[time.Time]() {
		if node["format"] != "date-time" {
			t.Errorf("%s: a time.Time needs \"format\": \"date-time\"", path)
		}
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		items, ok := node["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: array without items", path)
			return
		}
		s.agree(t, path+"[]", typ.Elem(), base, items)
	case reflect.Map:
		if typ.Key().Kind() != reflect.String {
			t.Errorf("%s: map keys must be strings", path)
		}
		pp, _ := node["patternProperties"].(map[string]any)
		if len(pp) != 1 || node["additionalProperties"] != false {
			t.Errorf("%s: a map needs one patternProperties entry and additionalProperties false", path)
			return
		}
		for _, v := range pp {
			s.agree(t, path+"{}", typ.Elem(), base, v.(map[string]any))
		}
	case reflect.Struct:
		s.agreeStruct(t, path, typ, base, node)
	}
}

func (s schemaSet) agreeStruct(t *testing.T, path string, typ reflect.Type, base string, node map[string]any) {
	t.Helper()
	props, _ := node["properties"].(map[string]any)
	if node["additionalProperties"] != false {
		t.Errorf("%s: object without \"additionalProperties\": false", path)
	}
	var required []string
	list, _ := node["required"].([]any)
	for _, r := range list {
		required = append(required, r.(string))
	}
	seen := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, ok := f.Tag.Lookup("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		if f.Anonymous || !ok {
			t.Errorf("%s.%s: every field needs a json tag (embedding is not supported here)", path, f.Name)
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		seen[name] = true
		prop, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: Go field %s (json %q) is not a property of the schema", path, f.Name, name)
			continue
		}
		omitempty := slices.Contains(strings.Split(opts, ","), "omitempty")
		if isReq := slices.Contains(required, name); isReq == omitempty {
			t.Errorf("%s.%s: omitempty is %v but required is %v; a field Go always writes is required, an omitempty one is not", path, name, omitempty, isReq)
		}
		s.agree(t, path+"."+name, f.Type, base, prop)
	}
	for name := range props {
		if !seen[name] {
			t.Errorf("%s: schema property %q has no Go field", path, name)
		}
	}
	for _, r := range required {
		if !seen[r] {
			t.Errorf("%s: required %q has no Go field", path, r)
		}
	}
}

func TestSchemasAndGoTypesHaveTheSameFields(t *testing.T) {
	set := loadSchemas(t)
	for _, tc := range []struct {
		schema schemas.Name
		typ    reflect.Type
	}{
		{schemas.ModelRegistryFile, reflect.TypeFor[catalog.RegistryFile]()},
		{schemas.TaskCategoriesFile, reflect.TypeFor[catalog.CategoriesFile]()},
		{schemas.Model, reflect.TypeFor[catalog.Model]()},
		{schemas.Category, reflect.TypeFor[catalog.Category]()},
		{schemas.Benchmark, reflect.TypeFor[catalog.Benchmark]()},
		{schemas.SelectionConfig, reflect.TypeFor[selection.Config]()},
		{schemas.SelectionRequest, reflect.TypeFor[selection.Request]()},
		{schemas.SelectionReply, reflect.TypeFor[selection.Reply]()},
		{schemas.GPUSample, reflect.TypeFor[telemetry.Sample]()},
		{schemas.SelectionEvent, reflect.TypeFor[events.SelectionEvent]()},
	} {
		t.Run(string(tc.schema), func(t *testing.T) {
			set.agree(t, tc.typ.Name(), tc.typ, tc.schema.ID(), set[tc.schema.ID()])
		})
	}
}

// The schema's mode enum is exactly the Go modes.
func TestModeEnum(t *testing.T) {
	set := loadSchemas(t)
	_, mode := set.resolve(t, schemas.SelectionRequest.ID(), map[string]any{"$ref": "#/$defs/mode"})
	var got []selection.Mode
	for _, v := range mode["enum"].([]any) {
		m := selection.Mode(v.(string))
		if !m.Valid() {
			t.Errorf("schema mode %q is not a valid selection.Mode", m)
		}
		got = append(got, m)
	}
	want := []selection.Mode{selection.ModeBenchmark, selection.ModeMultiCategory, selection.ModeGPUAware}
	if !slices.Equal(got, want) {
		t.Fatalf("schema modes %v, want %v", got, want)
	}
}

// Config.Validate bounds what the schema bounds, so that a config built in
// Go cannot hold what a stored one may not; the agent refuses readings
// beyond the bounds the sample's schema sets.
func TestGoBoundsMatchTheSchemas(t *testing.T) {
	tests := []struct {
		schema schemas.Name
		// want maps "properties/NAME" or "$defs/NAME" to the Go bound.
		want map[string]float64
	}{
		{schemas.SelectionConfig, map[string]float64{
			"properties/stale_after_ms":      selection.MaxDurationMs,
			"properties/reservation_ttl_ms":  selection.MaxDurationMs,
			"properties/max_temperature_c":   selection.MaxTemperatureBoundC,
			"properties/ideal_temperature_c": selection.MaxTemperatureBoundC,
			"properties/alternatives":        selection.MaxAlternatives,
			"$defs/placement_weight":         selection.MaxPlacementWeight,
		}},
		{schemas.GPUSample, map[string]float64{
			"properties/temperature_c": telemetry.MaxTemperatureC,
			"$defs/memory_mb":          telemetry.MaxMemoryMB,
			"$defs/pct":                telemetry.MaxPct,
			"$defs/watts":              telemetry.MaxWatts,
		}},
	}
	for _, tt := range tests {
		src, err := schemas.Source(tt.schema)
		if err != nil {
			t.Fatal(err)
		}
		type bounded map[string]struct {
			Maximum *float64 `json:"maximum"`
		}
		var sections struct {
			Properties bounded `json:"properties"`
			Defs       bounded `json:"$defs"`
		}
		if err := json.Unmarshal(src, &sections); err != nil {
			t.Fatal(err)
		}
		doc := map[string]bounded{"properties": sections.Properties, "$defs": sections.Defs}
		for where, want := range tt.want {
			t.Run(string(tt.schema)+"/"+where, func(t *testing.T) {
				section, name, _ := strings.Cut(where, "/")
				if got := doc[section][name].Maximum; got == nil || *got != want {
					t.Fatalf("schema maximum %v, Go bound %v", got, want)
				}
			})
		}
	}
}

// The catalog's benchmark weight bounds are the category schema's.
func TestWeightBoundsMatchTheSchema(t *testing.T) {
	src, err := schemas.Source(schemas.Category)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties struct {
			Weights struct {
				PatternProperties map[string]struct {
					Minimum *float64 `json:"minimum"`
					Maximum *float64 `json:"maximum"`
				} `json:"patternProperties"`
			} `json:"weights"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	bounds := doc.Properties.Weights.PatternProperties
	if len(bounds) != 1 {
		t.Fatalf("weights has %d key patterns, want 1", len(bounds))
	}
	for _, b := range bounds {
		if b.Minimum == nil || *b.Minimum != catalog.MinWeight || b.Maximum == nil || *b.Maximum != catalog.MaxWeight {
			t.Fatalf("schema weight bounds %v..%v, Go %v..%v", b.Minimum, b.Maximum, catalog.MinWeight, catalog.MaxWeight)
		}
	}
}

package registry

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

func TestModelsReadEndpoints(t *testing.T) {
	h := start(t)
	want := exampleCatalog(t)

	var list []catalog.Model
	h.ok("models.list", nil, &list)
	if !reflect.DeepEqual(list, want.RegistryFile().Models) {
		t.Fatalf("models.list: got %d models, want the %d of the example, sorted by id", len(list), len(want.Models))
	}

	first := want.Models[0]
	tests := []struct {
		name     string
		body     any
		wantCode string
	}{
		{"existing", IDRequest{ID: first.ID}, ""},
		{"unknown id", IDRequest{ID: "no-such-model"}, bus.CodeNotFound},
		{"no id", IDRequest{}, bus.CodeBadRequest},
		{"no body", nil, bus.CodeBadRequest},
		{"not JSON", "{id", bus.CodeBadRequest},
		{"unknown field", `{"id":"x","ids":["y"]}`, bus.CodeBadRequest},
		{"not a key", IDRequest{ID: "a b"}, bus.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.call("models.get", tc.body)
			if r.code != tc.wantCode {
				t.Fatalf("code %q (%s), want %q", r.code, r.desc, tc.wantCode)
			}
			if tc.wantCode != "" {
				return
			}
			var got catalog.Model
			if err := json.Unmarshal(r.data, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, first) {
				t.Fatalf("got %+v, want %+v", got, first)
			}
		})
	}
}

func TestModelPut(t *testing.T) {
	h := start(t)
	m := testModel()

	var put ModelPutReply
	h.ok("models.put", m, &put)
	if put.ID != m.ID || put.Revision == 0 {
		t.Fatalf("put reply %+v", put)
	}
	var got catalog.Model
	h.ok("models.get", IDRequest{ID: m.ID}, &got)
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("get after put: %+v, want %+v", got, m)
	}

	t.Run("same model again writes nothing", func(t *testing.T) {
		before := h.seqs()
		var again ModelPutReply
		h.ok("models.put", m, &again)
		if again.Revision != put.Revision || !maps.Equal(before, h.seqs()) {
			t.Fatalf("revision %d -> %d, seqs %v -> %v", put.Revision, again.Revision, before, h.seqs())
		}
	})

	t.Run("replace", func(t *testing.T) {
		m2 := m
		m2.Name = "Test Coder 7B v2"
		var r ModelPutReply
		h.ok("models.put", m2, &r)
		if r.Revision <= put.Revision {
			t.Fatalf("revision %d after %d", r.Revision, put.Revision)
		}
		cat, err := h.load()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := cat.Model(m.ID); got.Name != m2.Name {
			t.Fatalf("stored name %q", got.Name)
		}
	})

	t.Run("stored value is the plain model JSON", func(t *testing.T) {
		e, err := h.svc.st.models.Get(t.Context(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		var stored catalog.Model
		if err := json.Unmarshal(e.Value(), &stored); err != nil || stored.ID != m.ID {
			t.Fatalf("stored %q: %v", e.Value(), err)
		}
	})
}

func TestModelPutRefused(t *testing.T) {
	h := start(t)
	schemaBad := `{"id":"Bad ID","parameters_b":7,"quantization":"q4","gpu_memory_mb":-5,"context_length":4096,
		"orchestration_categories":["code"],"benchmarks":{"HumanEval":120},"source":"x","colour":"red"}`
	unknownCat := testModel()
	unknownCat.OrchestrationCategories = []string{"code", "poetry"}
	badKey := testModel()
	badKey.ID = "test-model."
	bothKinds := testModel()
	bothKinds.Benchmarks = map[string]float64{"HumanEval": 120}
	bothKinds.OrchestrationCategories = []string{"poetry"}

	tests := []struct {
		name     string
		body     any
		wantCode string
		// wantProblems: each inner list names the parts of one problem line.
		wantProblems [][]string
	}{
		{"schema violations", schemaBad, bus.CodeBadRequest, [][]string{
			{`model "Bad ID"`, "id"},
			{"name", "missing"},
			{"gpu_memory_mb"},
			{"benchmarks.HumanEval", "120"},
			{"colour"},
		}},
		{"unknown category", unknownCat, bus.CodeUnprocessable, [][]string{
			{`model "` + unknownCat.ID + `": orchestration_categories[1]`, `"poetry"`},
		}},
		{"schema and rules together", bothKinds, bus.CodeBadRequest, [][]string{
			{"benchmarks.HumanEval", "120"},
			{"orchestration_categories[0]", `"poetry"`},
		}},
		{"id unusable as key", badKey, bus.CodeUnprocessable, [][]string{{`model "test-model."`, "key"}}},
		{"not JSON", `{"id":`, bus.CodeBadRequest, nil},
		{"not an object", `[1,2]`, bus.CodeBadRequest, [][]string{{"model: "}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.refused(t, "models.put", tc.body, tc.wantCode, tc.wantProblems...)
			if len(r.body.Problems) < len(tc.wantProblems) {
				t.Errorf("problems %q, want at least %d", r.body.Problems, len(tc.wantProblems))
			}
		})
	}
	cat, err := h.load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cat.RegistryFile(), exampleCatalog(t).RegistryFile()) {
		t.Fatal("registry differs from the seed after refused puts")
	}
}

func TestModelDelete(t *testing.T) {
	h := start(t)
	id := exampleCatalog(t).Models[3].ID
	var del ModelDeleteReply
	h.ok("models.delete", IDRequest{ID: id}, &del)
	if del.ID != id {
		t.Fatalf("reply %+v", del)
	}
	tests := []struct {
		name, endpoint string
		body           any
		wantCode       string
	}{
		{"get deleted", "models.get", IDRequest{ID: id}, bus.CodeNotFound},
		{"delete again", "models.delete", IDRequest{ID: id}, bus.CodeNotFound},
		{"delete without id", "models.delete", `{}`, bus.CodeBadRequest},
		{"delete what cannot be a key", "models.delete", IDRequest{ID: "a b"}, bus.CodeBadRequest},
		{"get what cannot be a key", "models.get", IDRequest{ID: "a b"}, bus.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := h.call(tc.endpoint, tc.body); r.code != tc.wantCode {
				t.Fatalf("code %q (%s), want %q", r.code, r.desc, tc.wantCode)
			}
		})
	}
	var list []catalog.Model
	h.ok("models.list", nil, &list)
	if len(list) != len(exampleCatalog(t).Models)-1 ||
		slices.ContainsFunc(list, func(m catalog.Model) bool { return m.ID == id }) {
		t.Fatalf("list after delete has %d models", len(list))
	}
}

// The last model cannot be deleted: selectors would keep serving the
// previous registry, while the registry said it held none.
func TestModelDeleteKeepsTheLastModel(t *testing.T) {
	h := start(t)
	models := exampleCatalog(t).Models
	for _, m := range models[1:] {
		h.ok("models.delete", IDRequest{ID: m.ID}, nil)
	}
	h.refused(t, "models.delete", IDRequest{ID: models[0].ID}, bus.CodeUnprocessable)
	if r := h.call("models.get", IDRequest{ID: models[0].ID}); r.code != "" {
		t.Fatalf("the last model is gone: %s %s", r.code, r.desc)
	}
}

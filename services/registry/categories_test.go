package registry

import (
	"reflect"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

func TestCategories(t *testing.T) {
	h := start(t)
	want := exampleCatalog(t)

	var list []catalog.Category
	h.ok("categories.list", nil, &list)
	if !reflect.DeepEqual(list, want.CategoriesFile().Categories) {
		t.Fatalf("categories.list: %d categories, want the %d of the example sorted by name", len(list), len(want.Categories))
	}
	var benchmarks []catalog.Benchmark
	h.ok("benchmarks.list", nil, &benchmarks)
	if !reflect.DeepEqual(benchmarks, want.Benchmarks) {
		t.Fatalf("benchmarks.list: %d benchmarks, want %d sorted by name", len(benchmarks), len(want.Benchmarks))
	}

	poetry := catalog.Category{Name: "poetry", Description: "verse", Weights: map[string]float64{"IFEval": 1}}
	var put CategoryPutReply
	h.ok("categories.put", poetry, &put)
	if put.Name != "poetry" || put.Revision == 0 {
		t.Fatalf("put reply %+v", put)
	}
	var got catalog.Category
	h.ok("categories.get", NameRequest{Name: "poetry"}, &got)
	if !reflect.DeepEqual(got, poetry) {
		t.Fatalf("get after put: %+v", got)
	}
	m := testModel()
	m.OrchestrationCategories = []string{"poetry"}
	h.ok("models.put", m, nil)

	tests := []struct {
		name, endpoint string
		body           any
		wantCode       string
		wantProblem    []string
	}{
		{"get unknown", "categories.get", NameRequest{Name: "cooking"}, bus.CodeNotFound, nil},
		{"get reserved key", "categories.get", NameRequest{Name: BenchmarksKey}, bus.CodeNotFound, nil},
		{"put undeclared benchmark", "categories.put",
			catalog.Category{Name: "trivia", Description: "x", Weights: map[string]float64{"Jeopardy": 1}},
			bus.CodeUnprocessable, []string{`category "trivia": weights.Jeopardy`, "not declared"}},
		{"put reserved name", "categories.put",
			catalog.Category{Name: "_trivia", Description: "x", Weights: map[string]float64{"MMLU": 1}},
			bus.CodeBadRequest, []string{`"_trivia"`, "name"}},
		{"put no weights", "categories.put", `{"name":"trivia","description":"x","weights":{}}`,
			bus.CodeBadRequest, []string{"weights"}},
		{"delete in use", "categories.delete", NameRequest{Name: "poetry"}, bus.CodeUnprocessable, nil},
		{"delete unknown", "categories.delete", NameRequest{Name: "cooking"}, bus.CodeNotFound, nil},
		{"delete without name", "categories.delete", `{"name":""}`, bus.CodeBadRequest, nil},
		{"delete what cannot be a key", "categories.delete", NameRequest{Name: "foo.>"}, bus.CodeBadRequest, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want [][]string
			if tc.wantProblem != nil {
				want = append(want, tc.wantProblem)
			}
			h.refused(t, tc.endpoint, tc.body, tc.wantCode, want...)
		})
	}

	h.ok("models.delete", IDRequest{ID: m.ID}, nil)
	var del CategoryDeleteReply
	h.ok("categories.delete", NameRequest{Name: "poetry"}, &del)
	if del.Name != "poetry" {
		t.Fatalf("delete reply %+v", del)
	}
	if r := h.call("categories.get", NameRequest{Name: "poetry"}); r.code != bus.CodeNotFound {
		t.Fatalf("get after delete: code %q", r.code)
	}
}

func TestWeights(t *testing.T) {
	h := start(t)
	f := func(v float64) *float64 { return &v }

	var code catalog.Category
	h.ok("weights.set", WeightRequest{Category: "code", Benchmark: "HumanEval", Weight: f(1.5)}, &code)
	if code.Weights["HumanEval"] != 1.5 || code.Weights["MBPP"] != 0.8 {
		t.Fatalf("weights after set: %v", code.Weights)
	}
	var stored catalog.Category
	h.ok("categories.get", NameRequest{Name: "code"}, &stored)
	if !reflect.DeepEqual(stored, code) {
		t.Fatalf("stored %v, reply %v", stored.Weights, code.Weights)
	}
	var removed catalog.Category
	h.ok("weights.set", WeightRequest{Category: "code", Benchmark: "MBPP", Weight: f(0)}, &removed)
	if _, ok := removed.Weights["MBPP"]; ok || len(removed.Weights) != 3 {
		t.Fatalf("weight 0 must remove MBPP: %v", removed.Weights)
	}
	if _, ok := removed.Rationale["MBPP"]; ok {
		t.Fatal("the rationale of a removed weight stays")
	}

	tests := []struct {
		name     string
		body     any
		wantCode string
	}{
		{"unknown category", WeightRequest{Category: "cooking", Benchmark: "MMLU", Weight: f(1)}, bus.CodeNotFound},
		{"undeclared benchmark", WeightRequest{Category: "code", Benchmark: "Jeopardy", Weight: f(1)}, bus.CodeUnprocessable},
		{"negative weight", WeightRequest{Category: "code", Benchmark: "MMLU", Weight: f(-1)}, bus.CodeUnprocessable},
		{"weight above MaxWeight", WeightRequest{Category: "code", Benchmark: "MMLU", Weight: f(5000)}, bus.CodeUnprocessable},
		{"weight below MinWeight", WeightRequest{Category: "code", Benchmark: "MMLU", Weight: f(5e-324)}, bus.CodeUnprocessable},
		{"last weight removed", WeightRequest{Category: "multilingual", Benchmark: "MGSM", Weight: f(0)}, bus.CodeUnprocessable},
		{"weight missing", `{"category":"code","benchmark":"MMLU"}`, bus.CodeBadRequest},
		{"unknown field", `{"category":"code","benchmark":"MMLU","weight":1,"scale":2}`, bus.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.refused(t, "weights.set", tc.body, tc.wantCode)
		})
	}
}

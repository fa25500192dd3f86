package registry

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
)

func TestImportRefused(t *testing.T) {
	h := start(t)
	reg, cats := example(t)
	dup := slices.Clone(reg.Models)
	dup[4].ID = dup[2].ID
	dup[7].Benchmarks = maps.Clone(dup[7].Benchmarks)
	dup[7].Benchmarks["HumanEval"] = 120
	badReg := catalog.RegistryFile{Version: 1, Models: dup}

	unknownCat := slices.Clone(reg.Models)
	unknownCat[1].OrchestrationCategories = []string{"code", "poetry"}

	tests := []struct {
		name         string
		body         any
		wantCode     string
		wantProblems [][]string
	}{
		{"duplicate id and score 120", ImportRequest{Registry: mustJSON(t, badReg), Categories: exampledata.Categories},
			bus.CodeBadRequest, [][]string{
				{"models[4]", "id", reg.Models[2].ID, "already used by models[2]"},
				{"models[7]", "benchmarks.HumanEval", "score 120 is outside 0..100"},
			}},
		{"unknown category", ImportRequest{Registry: mustJSON(t, catalog.RegistryFile{Version: 1, Models: unknownCat}), Categories: exampledata.Categories},
			bus.CodeUnprocessable, [][]string{{"models[1]", `"poetry"`}}},
		{"registry not JSON", `{"registry": {"version": 1, "models": [}, "categories": {}}`, bus.CodeBadRequest, nil},
		{"categories missing", ImportRequest{Registry: exampledata.Registry}, bus.CodeBadRequest, nil},
		{"categories of the wrong version", ImportRequest{Registry: exampledata.Registry,
			Categories: mustJSON(t, catalog.CategoriesFile{Version: 2, Benchmarks: cats.Benchmarks, Categories: cats.Categories})},
			bus.CodeBadRequest, [][]string{{"task_categories.json", "version"}}},
		{"unknown envelope field", `{"registry": {}, "categories": {}, "config": {}}`, bus.CodeBadRequest, nil},
		{"no models", ImportRequest{Registry: mustJSON(t, catalog.RegistryFile{Version: 1, Models: []catalog.Model{}}), Categories: exampledata.Categories},
			bus.CodeUnprocessable, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.refused(t, "import", tc.body, tc.wantCode, tc.wantProblems...)
		})
	}
}

func TestImportSmallerRegistry(t *testing.T) {
	h := start(t)
	reg, cats := example(t)
	// Keep the models that list neither multilingual nor chat, and drop those categories.
	var kept []catalog.Model
	for _, m := range reg.Models {
		if !m.Serves("multilingual") && !m.Serves("chat") {
			kept = append(kept, m)
		}
	}
	var keptCats []catalog.Category
	for _, c := range cats.Categories {
		if c.Name != "multilingual" && c.Name != "chat" {
			keptCats = append(keptCats, c)
		}
	}
	if len(kept) == 0 || len(kept) == len(reg.Models) {
		t.Fatalf("the example data changed: %d of %d models kept", len(kept), len(reg.Models))
	}
	newReg := mustJSON(t, catalog.RegistryFile{Version: 1, Models: kept})
	newCats := mustJSON(t, catalog.CategoriesFile{Version: 1, Benchmarks: cats.Benchmarks, Categories: keptCats})

	var res ImportReply
	h.ok("import", ImportRequest{Registry: newReg, Categories: newCats}, &res)
	want := ImportReply{Models: len(kept), Categories: len(keptCats), Benchmarks: len(cats.Benchmarks),
		RemovedModels: len(reg.Models) - len(kept), RemovedCategories: 2}
	if res != want {
		t.Fatalf("import reply %+v, want %+v", res, want)
	}
	var list []catalog.Model
	h.ok("models.list", nil, &list)
	wantCat, err := catalog.Parse("r", newReg, "c", newCats)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list, wantCat.RegistryFile().Models) {
		t.Fatalf("models after import: %d, want %d", len(list), len(kept))
	}
	if r := h.call("categories.get", NameRequest{Name: "chat"}); r.code != bus.CodeNotFound {
		t.Fatalf("removed category: code %q", r.code)
	}

	t.Run("the same import again writes nothing", func(t *testing.T) {
		before := h.seqs()
		var again ImportReply
		h.ok("import", ImportRequest{Registry: newReg, Categories: newCats}, &again)
		if again.RemovedModels != 0 || again.RemovedCategories != 0 || !maps.Equal(before, h.seqs()) {
			t.Fatalf("reply %+v, seqs %v -> %v", again, before, h.seqs())
		}
	})
}

func TestExportRoundTrip(t *testing.T) {
	h := start(t)
	want := exampleCatalog(t)
	var exp ExportReply
	h.ok("export", nil, &exp)
	if !reflect.DeepEqual(exp.Registry, want.RegistryFile()) || !reflect.DeepEqual(exp.Categories, want.CategoriesFile()) {
		t.Fatal("export differs from the seeded documents")
	}
	// What was exported imports as a no-op and exports the same again.
	before := h.seqs()
	var res ImportReply
	h.ok("import", ImportRequest{Registry: mustJSON(t, exp.Registry), Categories: mustJSON(t, exp.Categories)}, &res)
	if !maps.Equal(before, h.seqs()) {
		t.Fatal("importing the export wrote keys")
	}
	var again ExportReply
	h.ok("export", nil, &again)
	if !reflect.DeepEqual(again, exp) {
		t.Fatal("export changed after importing it")
	}
	var raw map[string]json.RawMessage
	h.ok("export", nil, &raw)
	if len(raw) != 2 || raw["registry"] == nil || raw["categories"] == nil {
		t.Fatalf("export keys %v", slices.Collect(maps.Keys(raw)))
	}
}

// Every single write of an import leaves a valid catalog in the buckets:
// selectors never see a broken one, and an interrupted import can be
// retried from a valid state. The import here drops two categories and the
// benchmarks only they weigh.
func TestImportKeepsEveryStepValid(t *testing.T) {
	h := start(t)
	reg, cats := example(t)
	dropped := map[string]bool{"multilingual": true, "chat": true}
	var keptCats []catalog.Category
	weighed := map[string]bool{}
	for _, c := range cats.Categories {
		if !dropped[c.Name] {
			keptCats = append(keptCats, c)
			for b := range c.Weights {
				weighed[b] = true
			}
		}
	}
	var keptBench []catalog.Benchmark
	for _, b := range cats.Benchmarks {
		if weighed[b.Name] {
			keptBench = append(keptBench, b)
		}
	}
	if len(keptBench) == len(cats.Benchmarks) {
		t.Fatal("the example data changed: no benchmark is weighed only by chat and multilingual")
	}
	var keptModels []catalog.Model
	for _, m := range reg.Models {
		if m.Serves("multilingual") || m.Serves("chat") {
			continue
		}
		m.Benchmarks = maps.Clone(m.Benchmarks)
		maps.DeleteFunc(m.Benchmarks, func(b string, _ float64) bool { return !weighed[b] })
		keptModels = append(keptModels, m)
	}
	next, err := catalog.New(keptBench, keptCats, keptModels)
	if err != nil {
		t.Fatal(err)
	}

	snap, err := h.svc.st.readCatalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ops, _, err := h.svc.importOps(snap, next)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range ops {
		target := snap.models
		if o.kv.Bucket() == bus.CategoriesBucket {
			target = snap.categories
		}
		switch {
		case o.key == BenchmarksKey:
			snap.benchmarks = entry{value: o.value, rev: snap.benchmarks.rev + 1}
		case o.value == nil:
			delete(target, o.key)
		default:
			target[o.key] = entry{value: o.value, rev: target[o.key].rev + 1}
		}
		if _, err := snap.catalog(); err != nil {
			t.Fatalf("after write %d of %d (%s) the buckets hold an invalid catalog: %v", i+1, len(ops), o, err)
		}
	}

	var res ImportReply
	h.ok("import", ImportRequest{Registry: mustJSON(t, next.RegistryFile()), Categories: mustJSON(t, next.CategoriesFile())}, &res)
	got, err := h.load()
	if err != nil {
		t.Fatalf("after the import: %v", err)
	}
	if !reflect.DeepEqual(got.CategoriesFile(), next.CategoriesFile()) || !reflect.DeepEqual(got.RegistryFile(), next.RegistryFile()) {
		t.Fatal("the stored catalog is not the imported one")
	}
}

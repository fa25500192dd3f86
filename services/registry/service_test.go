package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func TestDiscovery(t *testing.T) {
	h := start(t)
	msg, err := h.client.Request("$SRV.INFO."+ServiceName, nil, requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "registry" || info.Version != "1.0.0" {
		t.Fatalf("service %s %s", info.Name, info.Version)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
	}
	slices.Sort(subjects)
	want := []string{
		"orch.registry.benchmarks.list",
		"orch.registry.categories.delete", "orch.registry.categories.get", "orch.registry.categories.list", "orch.registry.categories.put",
		"orch.registry.config.get", "orch.registry.config.patch", "orch.registry.config.put",
		"orch.registry.export", "orch.registry.import",
		"orch.registry.models.delete", "orch.registry.models.get", "orch.registry.models.list", "orch.registry.models.put",
		"orch.registry.weights.set",
	}
	if !slices.Equal(subjects, want) {
		t.Fatalf("endpoints %q,\nwant %q", subjects, want)
	}
	if _, err := h.client.Request("$SRV.PING.registry", nil, requestTimeout); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSeedFromFiles(t *testing.T) {
	h := startServer(t)
	reg, cats := example(t)
	small := mustJSON(t, catalog.RegistryFile{Version: 1, Models: reg.Models[:3]})
	seedCfg := selection.DefaultConfig()
	seedCfg.GPUAware = false
	h.run(Config{
		Provision:      true,
		SeedRegistry:   writeFile(t, "MODEL_REGISTRY.json", small),
		SeedCategories: writeFile(t, "task_categories.json", mustJSON(t, cats)),
		SeedConfig:     writeFile(t, "selection.json", mustJSON(t, seedCfg)),
	}, WithSeedData(exampledata.Registry, exampledata.Categories)) // the files take precedence

	cat, cfg, err := LoadCatalog(t.Context(), h.js)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != seedCfg {
		t.Fatalf("LoadCatalog config %+v", cfg)
	}
	if len(cat.Models) != 3 || len(cat.Categories) != len(cats.Categories) || len(cat.Benchmarks) != len(cats.Benchmarks) {
		t.Fatalf("seeded %d models, %d categories, %d benchmarks", len(cat.Models), len(cat.Categories), len(cat.Benchmarks))
	}
	var got selection.Config
	h.ok("config.get", nil, &got)
	if got != seedCfg {
		t.Fatalf("seeded config %+v", got)
	}
}

func TestLoadCatalogWithoutRegistry(t *testing.T) {
	h := startServer(t)
	_, _, err := LoadCatalog(t.Context(), h.js)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadCatalog of fresh buckets: %v, want ErrNotFound (no config)", err)
	}
}

func TestSeedNeverOverwrites(t *testing.T) {
	h := start(t) // seeded with the example data and the default config
	patched := selection.DefaultConfig()
	patched.MultiCategory = false
	h.ok("config.patch", `{"multi_category": false}`, nil)
	h.ok("models.delete", IDRequest{ID: exampleCatalog(t).Models[0].ID}, nil)
	before := h.seqs()

	// A second registry on the same buckets, seeded otherwise, changes nothing.
	reg, cats := example(t)
	other := &harness{t: t, srv: h.srv, nc: h.nc, client: h.client, js: h.js}
	other.run(Config{Provision: true}, WithSeedData(mustJSON(t, catalog.RegistryFile{Version: 1, Models: reg.Models[:1]}), mustJSON(t, cats)))
	if !maps.Equal(before, h.seqs()) {
		t.Fatalf("seeding wrote to non-empty buckets: %v -> %v", before, h.seqs())
	}
	var cfg selection.Config
	h.ok("config.get", nil, &cfg)
	if cfg != patched {
		t.Fatalf("config after a second start: %+v", cfg)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	h := startServer(t)
	reg, _ := example(t)
	reg.Models[0].Benchmarks = map[string]float64{"HumanEval": 120}
	badReg := writeFile(t, "MODEL_REGISTRY.json", mustJSON(t, reg))
	goodCats := writeFile(t, "task_categories.json", exampledata.Categories)
	badCfg := selection.DefaultConfig()
	badCfg.Confidence.Primary = 2
	tests := []struct {
		name string
		cfg  Config
		opts []Option
		want error
	}{
		{"seed registry without categories", Config{SeedRegistry: goodCats}, nil, ErrConfig},
		{"seed file missing", Config{SeedRegistry: filepath.Join(t.TempDir(), "none.json"), SeedCategories: goodCats}, nil, os.ErrNotExist},
		{"invalid seed registry", Config{SeedRegistry: badReg, SeedCategories: goodCats}, nil, catalog.ErrScoreOutOfRange},
		{"invalid seed data", Config{}, []Option{WithSeedData([]byte(`{"version":1}`), exampledata.Categories)}, catalog.ErrSchema},
		{"invalid seed config", Config{SeedConfig: writeFile(t, "c.json", mustJSON(t, badCfg))}, nil, ErrBadRequest},
		{"negative timeout", Config{RequestTimeout: -1}, nil, ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, h.nc, tc.opts...)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want %v and ErrConfig", err, tc.want)
			}
		})
	}
	if _, err := New(Config{}, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("New without a connection: %v", err)
	}
}

func TestStoredCatalogInvalid(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	// Someone else wrote a model under the wrong key and an unknown category.
	m := testModel()
	m.OrchestrationCategories = []string{"poetry"}
	if _, err := h.svc.st.models.Put(ctx, "stray", mustJSON(t, m)); err != nil {
		t.Fatal(err)
	}
	_, err := h.load()
	var verr *catalog.ValidationError
	if !errors.Is(err, ErrStoredInvalid) || !errors.As(err, &verr) || !errors.Is(err, catalog.ErrUnknownCategory) {
		t.Fatalf("LoadCatalog: %v", err)
	}

	r := h.call("models.put", testModel())
	if r.code != bus.CodeInternal || !hasProblem(r.body.Problems, `key "stray"`, m.ID) || !hasProblem(r.body.Problems, `"poetry"`) {
		t.Fatalf("put on an invalid store: %s %s %q", r.code, r.desc, r.body.Problems)
	}
	// An import repairs it.
	var res ImportReply
	h.ok("import", ImportRequest{Registry: exampledata.Registry, Categories: exampledata.Categories}, &res)
	if res.RemovedModels != 1 {
		t.Fatalf("import reply %+v", res)
	}
	cat, err := h.load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cat.RegistryFile(), exampleCatalog(t).RegistryFile()) {
		t.Fatal("import did not restore the registry")
	}
}

func TestWriteConflicts(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	kv := h.svc.st.config
	// plan reads the config and, while interfere allows, lets "another
	// writer" change it before the write: the classic lost update.
	plan := func(interfere func(attempt int) bool) func(context.Context) ([]op, error) {
		attempt := 0
		return func(ctx context.Context) ([]op, error) {
			attempt++
			cur, err := readKey(ctx, kv, bus.SelectionConfigKey)
			if err != nil {
				return nil, err
			}
			if interfere(attempt) {
				if _, err := kv.Put(ctx, bus.SelectionConfigKey, cur.value); err != nil {
					return nil, err
				}
			}
			cfg := selection.DefaultConfig()
			cfg.Alternatives = attempt
			return []op{{kv: kv, key: bus.SelectionConfigKey, value: mustJSON(t, cfg), rev: cur.rev}}, nil
		}
	}

	tests := []struct {
		name          string
		interfere     func(int) bool
		wantErr       error
		wantConflicts uint64
	}{
		// attempt 1 is the plan write makes before taking the lease, 2 the
		// first one under it
		{"retried after one conflict", func(a int) bool { return a == 2 }, nil, 1},
		{"given up", func(int) bool { return true }, ErrConflict, maxWriteAttempts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.svc.Stats().Conflicts
			_, err := h.svc.write(ctx, "test", plan(tc.interfere))
			if !errors.Is(err, tc.wantErr) || (err != nil && codeOf(err) != bus.CodeNotReady) {
				t.Fatalf("write: %v, want %v", err, tc.wantErr)
			}
			if got := h.svc.Stats().Conflicts - before; got != tc.wantConflicts {
				t.Fatalf("%d conflicts, want %d", got, tc.wantConflicts)
			}
		})
	}
	cfg, err := storedConfig(mustEntry(t, kv))
	if err != nil || cfg.Alternatives != 3 {
		t.Fatalf("the retried write stored %+v (%v), want attempt 3's", cfg, err)
	}
}

func mustEntry(t *testing.T, kv jetstream.KeyValue) entry {
	t.Helper()
	e, err := readKey(t.Context(), kv, bus.SelectionConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPartialWriteListsWrittenKeys(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	gone, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteKeyValue(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	ops := []op{
		{kv: h.svc.st.models, key: "a-model", value: []byte(`{}`)},
		{kv: h.svc.st.categories, key: "a-category", value: []byte(`{}`)},
		{kv: gone, key: "x", value: []byte(`{}`)},
	}
	_, err = apply(ctx, ops)
	if !errors.Is(err, ErrPartialWrite) || !errors.Is(err, ErrUnavailable) || codeOf(err) != bus.CodeNotReady {
		t.Fatalf("apply: %v", err)
	}
	want := []string{"written: orch_models/a-model", "written: orch_categories/a-category"}
	if got := problemsOf(err); !slices.Equal(got, want) {
		t.Fatalf("problems %q, want %q", got, want)
	}
	if _, err := apply(ctx, ops[2:]); errors.Is(err, ErrPartialWrite) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a failed first write is no partial write: %v", err)
	}
}

func TestStats(t *testing.T) {
	h := start(t)
	h.ok("models.put", testModel(), nil)
	h.ok("config.patch", `{"gpu_aware": false}`, nil)
	h.call("models.put", `{"id":"x"}`)                     // 400
	h.call("categories.delete", NameRequest{Name: "code"}) // 422
	h.call("models.delete", IDRequest{ID: "none"})         // 404
	h.ok("models.list", nil, nil)                          // reads count nothing
	if got, want := h.svc.Stats(), (Stats{Writes: 2, Rejections: 3}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func TestRunOnce(t *testing.T) {
	h := start(t)
	if err := h.svc.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
}

// A handler's panic (bus.Guard's ErrPanic) is answered 500.
func TestPanicIsAnswered500(t *testing.T) {
	if code := codeOf(fmt.Errorf("%w: models.put", bus.ErrPanic)); code != bus.CodeInternal {
		t.Fatalf("code of a panic = %s, want 500", code)
	}
}

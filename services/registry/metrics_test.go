package registry

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs/obstest"
)

func writes(kind string) string { return fmt.Sprintf("orch_registry_writes_total{kind=%q}", kind) }

func rejections(kind, code string) string {
	return fmt.Sprintf("orch_registry_rejections_total{code=%q,kind=%q}", code, kind)
}

// eventually waits for cond, which the bucket watches make true; the
// deadline only keeps a broken test from hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(requestTimeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s", what)
		}
	}
}

func TestMetricsCountWrites(t *testing.T) {
	h := startServer(t)
	reg := prometheus.NewRegistry()
	h.run(Config{Provision: true}, WithSeedData(exampledata.Registry, exampledata.Categories), WithMetrics(reg))
	example := exampleCatalog(t)
	models, categories := len(example.Models), len(example.Categories)

	type call struct {
		endpoint string
		body     any
		wantCode string
	}
	steps := []struct {
		name  string
		calls []call
		// want are the series that changed since the start: every other
		// writes and rejections series must stay 0.
		want                   map[string]float64
		wantModels, wantCats   int
		wantWrites, wantRefuse uint64
	}{
		{
			name:       "nothing yet",
			wantModels: models, wantCats: categories,
		},
		{
			name: "a model put, a rejected model and other refusals",
			calls: []call{
				{"models.put", testModel(), ""},
				{"models.put", `{"id":"x"}`, bus.CodeBadRequest},
				{"categories.delete", NameRequest{Name: "code"}, bus.CodeUnprocessable},
				{"models.delete", IDRequest{ID: "none"}, bus.CodeNotFound},
				{"config.patch", `{"gpu_aware": false}`, ""},
				{"models.list", nil, ""}, // reads count nothing
			},
			want: map[string]float64{
				writes(kindModelPut):                                  1,
				writes(kindConfigPatch):                               1,
				rejections(kindModelPut, bus.CodeBadRequest):          1,
				rejections(kindCategoryDelete, bus.CodeUnprocessable): 1,
				rejections(kindModelDelete, bus.CodeNotFound):         1,
			},
			wantModels: models + 1, wantCats: categories,
			wantWrites: 2, wantRefuse: 3,
		},
		{
			name:  "the model deleted",
			calls: []call{{"models.delete", IDRequest{ID: testModel().ID}, ""}},
			want: map[string]float64{
				writes(kindModelPut):                                  1,
				writes(kindModelDelete):                               1,
				writes(kindConfigPatch):                               1,
				rejections(kindModelPut, bus.CodeBadRequest):          1,
				rejections(kindCategoryDelete, bus.CodeUnprocessable): 1,
				rejections(kindModelDelete, bus.CodeNotFound):         1,
			},
			wantModels: models, wantCats: categories,
			wantWrites: 3, wantRefuse: 3,
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for _, c := range st.calls {
				if r := h.call(c.endpoint, c.body); r.code != c.wantCode {
					t.Fatalf("%s: code %q (%s), want %q", c.endpoint, r.code, r.desc, c.wantCode)
				}
			}
			var got map[string]float64
			eventually(t, fmt.Sprintf("%d models and %d categories", st.wantModels, st.wantCats), func() bool {
				got = obstest.Scrape(t, reg)
				return got["orch_registry_models"] == float64(st.wantModels) && got["orch_registry_categories"] == float64(st.wantCats)
			})
			want := map[string]float64{"orch_registry_write_failures_total": 0, "orch_registry_write_conflicts_total": 0}
			for _, kind := range writeKinds {
				want[writes(kind)] = st.want[writes(kind)]
				for _, code := range rejectionCodes {
					want[rejections(kind, code)] = st.want[rejections(kind, code)]
				}
			}
			for _, s := range slices.Sorted(maps.Keys(want)) {
				if v, ok := got[s]; !ok || v != want[s] {
					t.Errorf("%s = %v (present %v), want %v", s, v, ok, want[s])
				}
			}
			if stats := h.svc.Stats(); stats.Writes != st.wantWrites || stats.Rejections != st.wantRefuse {
				t.Errorf("stats %+v, want %d writes and %d rejections like the metrics", stats, st.wantWrites, st.wantRefuse)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	h := startServer(t)
	idle, err := New(Config{}, h.nc)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		svc     func() *Service
		wantErr error
	}{
		{"not run", func() *Service { return idle }, ErrNotReady},
		{"serving", func() *Service { return h.run(Config{Provision: true}) }, nil},
		{"serving without NATS", func() *Service {
			other := &harness{t: t, srv: h.srv, nc: natstest.Connect(t, h.srv), client: h.client, js: h.js}
			svc := other.run(Config{})
			other.nc.Close()
			return svc
		}, ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.svc().Check(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	h := startServer(t)
	reg := prometheus.NewRegistry()
	for i, wantErr := range []error{nil, ErrConfig} {
		if _, err := New(Config{}, h.nc, WithMetrics(reg)); !errors.Is(err, wantErr) {
			t.Fatalf("registry %d on one metrics registry: %v, want %v", i+1, err, wantErr)
		}
	}
}

func TestMetricsAddrFromEnvironment(t *testing.T) {
	tests := []struct {
		name, env, want string
	}{
		{"default", "", ":9101"},
		{"set", "127.0.0.1:19101", "127.0.0.1:19101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("REGISTRY_METRICS_ADDR", tt.env) // restored after the test
			if tt.env == "" {
				if err := os.Unsetenv("REGISTRY_METRICS_ADDR"); err != nil {
					t.Fatal(err)
				}
			}
			var cfg Config
			if err := envconfig.Process("REGISTRY", &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.MetricsAddr != tt.want {
				t.Fatalf("MetricsAddr %q, want %q", cfg.MetricsAddr, tt.want)
			}
		})
	}
}

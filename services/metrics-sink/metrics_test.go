package metricssink

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs/obstest"
)

// TestMetrics: each orch_sink_* metric is the Stats counter it exports,
// after a run with new rows, duplicates, poison and failed commits.
func TestMetrics(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	const n, dups = 40, 5
	evs := makeEvents(0, n)
	// Already stored: the sink counts them as duplicates, not rows.
	if _, err := st.Insert(testCtx(t), records(t, evs[:dups])); err != nil {
		t.Fatal(err)
	}
	publish(t, js, evs)
	if _, err := js.Publish(testCtx(t), bus.SelectionEventSubject("code"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	flaky := &scriptedStore{Store: st, fail: failFirst(2)}
	reg := prometheus.NewRegistry()
	cfg := testConfig()
	cfg.RateWindow = time.Hour // every row of the test stays in the window
	r := start(t, cfg, js, flaky, WithMetrics(reg))
	waitFor(t, "every row", func() bool { return count(t, st) == n })
	settled(t, r.svc)

	got := obstest.Scrape(t, reg)
	st1 := r.svc.Stats()
	tests := []struct {
		name string
		want float64
	}{
		{"orch_sink_rows_inserted_total", n - dups},
		{"orch_sink_duplicates_total", dups},
		{"orch_sink_poison_total", 1},
		{"orch_sink_store_errors_total", 2},
		{"orch_sink_fetch_errors_total", 0},
		{"orch_sink_batches_total", float64(st1.Batches)},
		{"orch_sink_consumer_lag", 0},
		{"orch_sink_ack_pending", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := got[tt.name]
			if !ok {
				t.Fatalf("%s not exported; have %v", tt.name, got)
			}
			if v != tt.want {
				t.Fatalf("%s = %v, want %v", tt.name, v, tt.want)
			}
		})
	}
	if st1.Batches == 0 {
		t.Error("no batch counted")
	}
	if rate := got["orch_sink_ingest_rows_per_second"]; rate <= 0 {
		t.Errorf("orch_sink_ingest_rows_per_second = %v, want > 0 after %d rows", rate, n-dups)
	}
	if len(got) != 9 {
		t.Errorf("%d orch_sink metrics, want 9: %v", len(got), got)
	}
}

func TestMetricsRegisteredOnce(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	reg := prometheus.NewRegistry()
	if _, err := New(testConfig(), js, st, WithMetrics(reg)); err != nil {
		t.Fatal(err)
	}
	// A second sink on the same registry would export clashing series.
	if _, err := New(testConfig(), js, st, WithMetrics(reg)); !errors.Is(err, ErrConfig) {
		t.Fatalf("second New on one registry = %v, want ErrConfig", err)
	}
}

func TestCheck(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	tests := []struct {
		name  string
		store Store
		run   bool
		err   error
	}{
		{"not running", st, false, ErrNotReady},
		{"running", st, true, nil},
		{"running, database down", downStore{st}, true, ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.run {
				svc, err := New(testConfig(), js, tt.store)
				if err != nil {
					t.Fatal(err)
				}
				if err := svc.Check(); !errors.Is(err, tt.err) {
					t.Fatalf("Check = %v, want %v", err, tt.err)
				}
				return
			}
			r := start(t, testConfig(), js, tt.store)
			waitFor(t, "the consumer", func() bool { return r.svc.consuming.Load() })
			if err := r.svc.Check(); !errors.Is(err, tt.err) {
				t.Fatalf("Check = %v, want %v", err, tt.err)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if err := r.svc.Check(); !errors.Is(err, ErrNotReady) {
				t.Fatalf("Check after Run = %v, want ErrNotReady", err)
			}
		})
	}
}

// TestMetricsRowByRowBatches: on PostgreSQL, a batch holding an event already
// stored goes in row by row, and the sink exports how many did.
func TestMetricsRowByRowBatches(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st := openStore(t, postgresURL(t)).(*PostgresStore)
	evs := makeEvents(0, 10)
	if _, err := st.Insert(testCtx(t), records(t, evs[:3])); err != nil {
		t.Fatal(err)
	}
	publish(t, js, evs)
	reg := prometheus.NewRegistry()
	r := start(t, testConfig(), js, st, WithMetrics(reg))
	waitFor(t, "every row", func() bool { return count(t, st) == 10 })
	settled(t, r.svc)
	got := obstest.Scrape(t, reg)
	if v, ok := got["orch_sink_row_by_row_batches_total"]; !ok || v < 1 || v != float64(st.RowByRowBatches()) {
		t.Fatalf("orch_sink_row_by_row_batches_total = %v (exported: %v), want >= 1 and the store's %d", v, ok, st.RowByRowBatches())
	}
}

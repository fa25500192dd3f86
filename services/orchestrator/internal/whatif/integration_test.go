package whatif

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/client"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/eventlog"
	"github.com/nlocalmodels/orchestrator/services/registry"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

// waitLimit bounds every wait for the services; it is a safety net, not
// an assertion on speed.
const waitLimit = 30 * time.Second

// Two code models whose order a weight change flips, two chat models, same
// memory so that placement cannot tell them apart.
const testRegistry = `{"version": 1, "models": [
 {"id": "alpha", "name": "Alpha", "parameters_b": 7, "quantization": "q4_k_m", "gpu_memory_mb": 4000, "context_length": 32768,
  "orchestration_categories": ["code"], "benchmarks": {"HumanEval": 95, "MBPP": 50}, "source": "test"},
 {"id": "beta", "name": "Beta", "parameters_b": 7, "quantization": "q4_k_m", "gpu_memory_mb": 4000, "context_length": 32768,
  "orchestration_categories": ["code"], "benchmarks": {"HumanEval": 50, "MBPP": 80}, "source": "test"},
 {"id": "gamma", "name": "Gamma", "parameters_b": 7, "quantization": "q4_k_m", "gpu_memory_mb": 4000, "context_length": 32768,
  "orchestration_categories": ["chat"], "benchmarks": {"IFEval": 85}, "source": "test"},
 {"id": "delta", "name": "Delta", "parameters_b": 7, "quantization": "q4_k_m", "gpu_memory_mb": 4000, "context_length": 32768,
  "orchestration_categories": ["chat"], "benchmarks": {"IFEval": 70}, "source": "test"}
]}`

const testCategories = `{"version": 1,
 "benchmarks": [
  {"name": "HumanEval", "description": "d", "metric": "pass@1 %"},
  {"name": "MBPP", "description": "d", "metric": "pass@1 %"},
  {"name": "IFEval", "description": "d", "metric": "accuracy %"}],
 "categories": [
  {"name": "code", "description": "d", "weights": {"HumanEval": 1.0, "MBPP": 0.8}},
  {"name": "chat", "description": "d", "weights": {"IFEval": 1.0}}]
}`

func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.Parse("test registry", []byte(testRegistry), "test categories", []byte(testCategories))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// runService runs a service until the test ends and waits until it is ready.
func runService(t *testing.T, name string, run func(context.Context) error, ready <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	select {
	case <-ready:
	case <-done:
		t.Fatalf("%s stopped at start", name)
	case <-time.After(waitLimit):
		t.Fatalf("%s not ready", name)
	}
}

// rig is a NATS server with a real registry (seeded with the given
// documents) and a real selector, fed with GPU samples the test publishes.
type rig struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	gpus []telemetry.Sample
}

func startRig(t *testing.T, reg, cats []byte, gpus []telemetry.Sample) *rig {
	t.Helper()
	s, nc := natstest.Start(t)
	r := &rig{nc: nc, js: natstest.JetStream(t, nc), gpus: gpus}
	// Samples first, so that the selector warms with them.
	r.publishGPUs(t)
	rsvc, err := registry.New(registry.Config{}, natstest.Connect(t, s),
		registry.WithLogger(zerolog.Nop()), registry.WithSeedData(reg, cats))
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "registry", rsvc.Run, rsvc.Ready())
	snc := natstest.Connect(t, s)
	ssvc, err := selector.New(selector.DefaultConfig(), snc, selector.WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "selector", ssvc.Run, ssvc.Ready())
	// Ready comes as the endpoint is added; the flush makes sure the server
	// has its subscription before another connection sends a request.
	if err := snc.FlushWithContext(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return r
}

// publishGPUs publishes a fresh sample of every GPU into the telemetry
// stream; a newer sample also clears the selector's older reservations.
func (r *rig) publishGPUs(t *testing.T) {
	t.Helper()
	now := time.Now().UTC()
	for _, g := range r.gpus {
		g.Timestamp = now
		data, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.js.Publish(testCtx(t), bus.TelemetrySubject(g.Host, g.Index), data); err != nil {
			t.Fatal(err)
		}
	}
}

// decide sends the requests and returns how many were answered.
func (r *rig) decide(t *testing.T, reqs []selection.Request) int {
	t.Helper()
	c := client.New(r.nc, client.WithTimeout(waitLimit))
	n := 0
	for _, req := range reqs {
		rep, err := c.Select(testCtx(t), req)
		if err != nil {
			t.Fatalf("select %+v: %v", req, err)
		}
		if rep.Mode != selection.ModeGPUAware || rep.GPU == nil {
			t.Fatalf("reply for %s not placed on a GPU: mode %s degraded %v", req.TaskCategory, rep.Mode, rep.Degraded)
		}
		n++
	}
	return n
}

// recorded waits until the stream holds n events and reads them back.
func (r *rig) recorded(t *testing.T, n int) []events.SelectionEvent {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		var evs []events.SelectionEvent
		st, err := eventlog.Replay(testCtx(t), r.js, eventlog.Window{}, func(rec eventlog.Record) error {
			evs = append(evs, rec.Event)
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > n || st.Undecodable != 0 {
			t.Fatalf("replayed %d events (%d undecodable), want %d", len(evs), st.Undecodable, n)
		}
		if len(evs) == n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events in %s, want %d", len(evs), bus.SelectionStream, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gpu(host string, index int, util, temp float64) telemetry.Sample {
	return telemetry.Sample{
		Host: host, Index: index, UUID: fmt.Sprintf("GPU-%s-%d", host, index), Name: "NVIDIA H100 80GB HBM3",
		Source: "simulated", MemoryTotalMB: 81559, MemoryUsedMB: 1000, MemoryFreeMB: 80559,
		UtilizationGPUPct: util, TemperatureC: temp, PowerW: 100, PowerLimitW: 700, Healthy: true,
	}
}

func rescoreAll(t *testing.T, evs []events.SelectionEvent, cat *catalog.Catalog, cfg selection.Config, specJSON string) Report {
	t.Helper()
	spec, err := ParseSpec([]byte(specJSON))
	if err != nil {
		t.Fatal(err)
	}
	newCat, newCfg, err := spec.Apply(cat, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRescorer(newCat, newCfg)
	if err != nil {
		t.Fatal(err)
	}
	tally := NewTally(len(evs))
	for i := range evs {
		tally.Add(rs.Rescore(&evs[i]))
	}
	return tally.Report()
}

// TestUnchangedConfigChangesNothing re-scores decisions a real selector made
// on the example registry, with reservations building up between samples:
// with the config and weights they were made with, none may change.
func TestUnchangedConfigChangesNothing(t *testing.T) {
	gpus := []telemetry.Sample{gpu("node-a", 0, 10, 45), gpu("node-a", 1, 60, 70), gpu("node-b", 0, 30, 55), gpu("node-b", 1, 0, 38)}
	r := startRig(t, exampledata.Registry, exampledata.Categories, gpus)
	categories := []string{"code", "math", "reasoning", "general", "chat", "multilingual"}
	total := 0
	for batch := range 3 {
		var reqs []selection.Request
		// One request per category: even the largest picks fit the four GPUs
		// together, before the next samples clear the batch's reservations.
		for i := range len(categories) {
			reqs = append(reqs, selection.Request{
				RequestID:    fmt.Sprintf("b%d-%d", batch, i),
				TaskCategory: categories[i%len(categories)],
			})
		}
		total += r.decide(t, reqs)
		r.publishGPUs(t)
	}
	evs := r.recorded(t, total)
	reserved := false
	for _, ev := range evs {
		if len(ev.GPUs) == 0 {
			t.Fatalf("event %s recorded no GPU", ev.EventID)
		}
		for _, g := range ev.GPUs {
			reserved = reserved || g.ReservedMB > 0
		}
	}
	if !reserved {
		t.Fatal("no event recorded a reservation: the ledger path is not exercised")
	}
	cat, cfg, err := registry.LoadCatalog(testCtx(t), r.js)
	if err != nil {
		t.Fatal(err)
	}
	rep := rescoreAll(t, evs, cat, cfg, `{}`)
	if rep.Read != total || rep.Changed != 0 {
		t.Fatalf("read %d, changed %d (%+v); want %d read, 0 changed", rep.Read, rep.Changed, rep.Transitions, total)
	}
}

// TestWeightChangesExpectedDecisions records decisions on a catalog whose
// code ranking a weight flips, then asks what other specs would have chosen.
func TestWeightChangesExpectedDecisions(t *testing.T) {
	r := startRig(t, []byte(testRegistry), []byte(testCategories), []telemetry.Sample{gpu("node-a", 0, 20, 50), gpu("node-a", 1, 40, 60)})
	var reqs []selection.Request
	for i := range 10 {
		reqs = append(reqs, selection.Request{RequestID: fmt.Sprintf("code-%d", i), TaskCategory: "code"},
			selection.Request{RequestID: fmt.Sprintf("chat-%d", i), TaskCategory: "chat"})
	}
	n := r.decide(t, reqs)
	evs := r.recorded(t, n)
	for _, ev := range evs {
		if want := map[string]string{"code": "alpha", "chat": "gamma"}[ev.TaskCategory]; ev.SelectedModel != want {
			t.Fatalf("recorded %s chose %s, want %s: the test catalog does not rank as planned", ev.TaskCategory, ev.SelectedModel, want)
		}
	}
	cat, cfg, err := registry.LoadCatalog(testCtx(t), r.js)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		spec        string
		changed     int
		transitions []Transition
	}{
		{name: "unchanged", spec: `{}`},
		{
			name: "MBPP raised above HumanEval", spec: `{"weights": {"code": {"MBPP": 3}}}`, changed: 10,
			transitions: []Transition{{Category: "code", From: "alpha", To: "beta", Count: 10}},
		},
		{
			name: "HumanEval no longer weighed", spec: `{"weights": {"code": {"HumanEval": 0}}}`, changed: 10,
			transitions: []Transition{{Category: "code", From: "alpha", To: "beta", Count: 10}},
		},
		{name: "HumanEval raised further", spec: `{"weights": {"code": {"HumanEval": 3}}}`},
		{name: "GPU placement off: quality still decides", spec: `{"gpu_aware": false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := rescoreAll(t, evs, cat, cfg, tc.spec)
			if rep.Read != n || rep.Changed != tc.changed || rep.Failed != 0 {
				t.Fatalf("read %d changed %d failed %d, want %d read, %d changed", rep.Read, rep.Changed, rep.Failed, n, tc.changed)
			}
			if len(tc.transitions) > 0 || len(rep.Transitions) > 0 {
				if fmt.Sprint(rep.Transitions) != fmt.Sprint(tc.transitions) {
					t.Fatalf("transitions = %+v, want %+v", rep.Transitions, tc.transitions)
				}
			}
			if len(rep.ChangedEventIDs) != tc.changed {
				t.Fatalf("%d changed ids, want %d", len(rep.ChangedEventIDs), tc.changed)
			}
		})
	}
}

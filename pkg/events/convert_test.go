package events

import (
	"fmt"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

func TestFromReply(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sample := func(host string, index int, free int64) telemetry.Sample {
		return telemetry.Sample{Host: host, Index: index, UUID: host + "-uuid", Timestamp: now, MemoryTotalMB: 81920, MemoryFreeMB: free, Healthy: true}
	}
	ledger := selection.NewLedger()
	ledger.Reserve(selection.Reservation{ID: "r1", GPUKey: "a/1", MemoryMB: 5000, At: now, Expires: now.Add(time.Minute)})
	cat, err := catalog.New(
		[]catalog.Benchmark{{Name: "HumanEval", Description: "code", Metric: "pass@1 %"}},
		[]catalog.Category{{Name: "code", Description: "code", Weights: map[string]float64{"HumanEval": 1}}},
		[]catalog.Model{{ID: "m1", Name: "M1", ParametersB: 7, Quantization: "q4_k_m", GPUMemoryMB: 6000, ContextLength: 8192,
			OrchestrationCategories: []string{"code"}, Benchmarks: map[string]float64{"HumanEval": 80}, Source: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := selection.NewEngine(cat, selection.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	fleet := e.NewFleet([]telemetry.Sample{sample("a", 1, 50000)}, ledger)
	tests := []struct {
		name     string
		mode     selection.Mode
		gpuID    *int
		wantGPUs map[string]int64 // key -> reserved MB
	}{
		{name: "placed: the reservation the selection saw", mode: selection.ModeGPUAware, gpuID: new(int), wantGPUs: map[string]int64{"a/1": 5000}},
		{name: "no GPU placed", mode: selection.ModeMultiCategory, wantGPUs: map[string]int64{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &selection.Request{RequestID: "req-1", TaskCategory: "code", Mode: tt.mode}
			res, err := e.Select(selection.Query{Request: *req, Now: now, Seed: 7}, fleet)
			if err != nil {
				t.Fatal(err)
			}
			reply := res.Reply(req, "ev-1", now, 2500*time.Microsecond)
			// A parallel placement after the decision: the event keeps what
			// the selection saw.
			ledger.Reserve(selection.Reservation{ID: fmt.Sprint("later-", i), GPUKey: "a/1", MemoryMB: 7000, At: now, Expires: now.Add(time.Minute)})
			ev := FromReply(req, &reply, &res, "sel-1", fleet)
			if ev.EventID != "ev-1" || ev.SelectedModel != "m1" || ev.TaskCategory != "code" || ev.Selector != "sel-1" ||
				ev.Request.RequestID != "req-1" || ev.SelectionDurationMs != 2.5 || ev.ConfidenceScore != reply.Scores.Confidence {
				t.Fatalf("event %+v", ev)
			}
			if tt.gpuID != nil {
				*tt.gpuID = 1
			}
			if (ev.GPUID == nil) != (tt.gpuID == nil) || (ev.GPUID != nil && *ev.GPUID != *tt.gpuID) {
				t.Errorf("gpu_id = %v, want %v", ev.GPUID, tt.gpuID)
			}
			if len(ev.GPUs) != len(tt.wantGPUs) {
				t.Fatalf("recorded %d GPUs, want %d: %+v", len(ev.GPUs), len(tt.wantGPUs), ev.GPUs)
			}
			for _, g := range ev.GPUs {
				if want, ok := tt.wantGPUs[g.Sample.Key()]; !ok || g.ReservedMB != want {
					t.Errorf("GPU %s reserved %d, want %d (listed: %v)", g.Sample.Key(), g.ReservedMB, want, ok)
				}
			}
		})
	}
}

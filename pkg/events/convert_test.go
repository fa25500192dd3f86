package events

import (
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
	fleet := e.NewFleet([]telemetry.Sample{sample("a", 0, 60000), sample("a", 1, 50000)}, ledger)
	req := &selection.Request{RequestID: "req-1", TaskCategory: "code"}
	lookup := func(key string) *selection.GPU {
		g, ok := fleet.Lookup(key)
		if !ok {
			t.Fatalf("no GPU %s in the fleet", key)
		}
		return g
	}
	tests := []struct {
		name     string
		reply    selection.Reply
		top      *selection.GPU
		gpuID    *int
		wantGPUs map[string]int64 // key -> reserved MB
	}{
		{
			name: "placed, with an alternative on another GPU and one on the same",
			reply: selection.Reply{
				EventID: "ev-1", RequestID: "req-1", TaskCategory: "code", ModelID: "m1", PrimaryCategory: true,
				Scores: selection.Scores{Confidence: 0.9}, FinalScore: 0.7, SelectionDurationUs: 2500,
				GPU: &selection.GPURef{Host: "a", Index: 0, UUID: "a-uuid"}, Mode: selection.ModeGPUAware, Timestamp: now,
				Alternatives: []selection.Alternative{
					{ModelID: "m2", GPU: &selection.GPURef{Host: "a", Index: 1}},
					{ModelID: "m3", GPU: &selection.GPURef{Host: "a", Index: 0}},
				},
			},
			gpuID:    new(int),
			wantGPUs: map[string]int64{"a/0": 0, "a/1": 5000},
		},
		{
			name: "a near-tie chosen: the top candidate's GPU is recorded too",
			reply: selection.Reply{
				EventID: "ev-3", RequestID: "req-1", TaskCategory: "code", ModelID: "m1", PrimaryCategory: true,
				Scores: selection.Scores{Confidence: 0.9}, FinalScore: 0.7, SelectionDurationUs: 2500,
				GPU: &selection.GPURef{Host: "a", Index: 0, UUID: "a-uuid"}, Mode: selection.ModeGPUAware, Timestamp: now,
			},
			top:      lookup("a/1"),
			gpuID:    new(int),
			wantGPUs: map[string]int64{"a/0": 0, "a/1": 5000},
		},
		{
			name:     "no GPU placed",
			reply:    selection.Reply{EventID: "ev-2", TaskCategory: "code", ModelID: "m1", Mode: selection.ModeMultiCategory, Timestamp: now},
			wantGPUs: map[string]int64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := FromReply(req, &tt.reply, tt.top, "sel-1", fleet, now)
			if ev.EventID != tt.reply.EventID || ev.SelectedModel != "m1" || ev.TaskCategory != "code" || ev.Selector != "sel-1" ||
				ev.Request.RequestID != "req-1" || ev.SelectionDurationMs != tt.reply.SelectionDurationUs/1000 || ev.ConfidenceScore != tt.reply.Scores.Confidence {
				t.Fatalf("event %+v", ev)
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

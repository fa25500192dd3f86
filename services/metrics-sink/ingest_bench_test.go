package metricssink

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// benchEvent is an event the size the selector publishes: three
// alternatives on GPUs and the four GPU samples the decision saw.
func benchEvent(i int) events.SelectionEvent {
	ev := makeEvent(i)
	g := &selection.GPURef{Host: "gpu-host-1", Index: i % 8, UUID: fmt.Sprintf("GPU-%08d", i%64), Name: "NVIDIA A100-SXM4-80GB"}
	ev.Alternatives = nil
	for _, m := range []string{"llama-3.1-8b-instruct-q4_k_m", "mistral-7b-instruct-v0.3-q5_k_m", "qwen2.5-7b-instruct-q4_k_m"} {
		ev.Alternatives = append(ev.Alternatives, selection.Alternative{ModelID: m, GPU: g, FinalScore: 0.512345, Scores: ev.Scores})
	}
	for j := range 4 {
		ev.GPUs = append(ev.GPUs, events.GPUState{ReservedMB: 4096, Sample: telemetry.Sample{
			Host: "gpu-host-1", Index: j, UUID: fmt.Sprintf("GPU-%08d", j), Name: "NVIDIA A100-SXM4-80GB",
			Timestamp: ev.Timestamp.Add(-time.Second), Source: "nvml", MemoryTotalMB: 81920, MemoryUsedMB: 20480, MemoryFreeMB: 61440,
			UtilizationGPUPct: 57, UtilizationMemoryPct: 31, TemperatureC: 61, PowerW: 250.5, PowerLimitW: 400, Healthy: true,
		}})
	}
	return ev
}

// benchMessages is a batch of DefaultBatchSize event messages and their mean size.
func benchMessages(b *testing.B) ([][]byte, int) {
	msgs := make([][]byte, 0, DefaultBatchSize)
	size := 0
	for i := range DefaultBatchSize {
		data, err := json.Marshal(benchEvent(i))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, data)
		size += len(data)
	}
	return msgs, size / DefaultBatchSize
}

// BenchmarkIngest measures the sink's work per row, decoding the message
// through committing its batch, on each backend (PostgreSQL where
// ORCH_TEST_POSTGRES_URL names one): rows/s is what one sink can take on
// one core.
func BenchmarkIngest(b *testing.B) { benchRows(b, true) }

// BenchmarkInsert measures the store's Insert alone: the one writer's work
// per row, which bounds a sink whose decoding runs on the other cores.
// SQLite's checkpointer copies the WAL mostly while the timer is stopped,
// as it would on another core of a busy sink.
func BenchmarkInsert(b *testing.B) { benchRows(b, false) }

// benchRows stores b.N rows, each a new event id, in batches of
// DefaultBatchSize on each backend; decoding the messages is timed only
// with decodeTimed. Untimed, each record is encoded again with its new id;
// timed, event_json keeps the message's id (encoding twice would count).
func benchRows(b *testing.B, decodeTimed bool) {
	msgs, size := benchMessages(b)
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			ctx := context.Background()
			st := openStore(b, be.url(b))
			b.SetBytes(int64(size))
			b.ResetTimer()
			n := 0
			recs := make([]Record, 0, len(msgs))
			for n < b.N {
				if !decodeTimed {
					b.StopTimer()
				}
				recs = recs[:0]
				for i := 0; i < len(msgs) && n < b.N; i++ {
					r, err := DecodeRecord(msgs[i])
					if err == nil {
						r.Event.EventID = fmt.Sprintf("ev-%09d", n) // every row new
						if !decodeTimed {
							r, err = NewRecord(r.Event)
						}
					}
					if err != nil {
						b.Fatal(err)
					}
					recs = append(recs, r)
					n++
				}
				b.StartTimer()
				if _, err := st.Insert(ctx, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

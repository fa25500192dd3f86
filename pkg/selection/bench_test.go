package selection

import (
	"fmt"
	"testing"
)

// BenchmarkSelect measures one gpu_aware selection at three fleet sizes.
// Run: scripts/bench-engine (go test -run '^$' -bench BenchmarkSelect -benchmem ./selection/).
func BenchmarkSelect(b *testing.B) {
	for _, size := range []struct{ models, gpus int }{{20, 8}, {200, 1024}, {1000, 10000}} {
		b.Run(fmt.Sprintf("models=%d/gpus=%d", size.models, size.gpus), func(b *testing.B) {
			e := newTestEngine(b, syntheticCatalog(b, size.models, 1), nil)
			f := e.NewFleet(syntheticSamples(size.gpus, 2, t0), nil)
			categories := []string{"code", "math", "general"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				q := Query{Request: Request{TaskCategory: categories[i%3]}, Now: t0, Seed: uint64(i)}
				if _, err := e.Select(q, f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSelectConstrained adds a host and memory constraint, which
// defeats part of the pruning.
func BenchmarkSelectConstrained(b *testing.B) {
	e := newTestEngine(b, syntheticCatalog(b, 200, 1), nil)
	f := e.NewFleet(syntheticSamples(1024, 2, t0), nil)
	q := Query{Request: Request{TaskCategory: "code", Constraints: Constraints{
		Hosts: []string{"host-007", "host-100"}, MaxGPUMemoryMB: 16384, MaxUtilizationPct: 50,
	}}, Now: t0}
	b.ReportAllocs()
	for b.Loop() {
		q.Seed++
		if _, err := e.Select(q, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewEngine is the cost paid on a registry or config change.
func BenchmarkNewEngine(b *testing.B) {
	cat := syntheticCatalog(b, 1000, 1)
	cfg := DefaultConfig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEngine(cat, cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewFleet is the cost paid when telemetry changes.
func BenchmarkNewFleet(b *testing.B) {
	e := newTestEngine(b, syntheticCatalog(b, 20, 1), nil)
	samples := syntheticSamples(10000, 2, t0)
	ledger := NewLedger()
	b.ReportAllocs()
	for b.Loop() {
		e.NewFleet(samples, ledger)
	}
}

package selection

import (
	"cmp"
	"slices"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// GPU is one GPU as the engine sees it: its latest sample plus what the
// engine derived from it when the fleet was compiled.
type GPU struct {
	Sample telemetry.Sample
	Key    string
	Ref    GPURef
	slot   int
	// staleAtNanos: after this instant the sample is stale.
	staleAtNanos int64
	// bound is the best placement score any model could get here (no
	// reservations, a model needing no memory): the pruning bound.
	bound float64
	// utilizationUnknown and temperatureUnknown: the agent's read failed
	// (listed in FailedReads), so the sample's 0 is no measurement.
	utilizationUnknown, temperatureUnknown bool
}

// Fleet is an immutable view of the GPUs, compiled by an engine from the
// latest samples whenever telemetry changes, so that nothing per request
// needs sorting or parsing. GPUs are ordered by their placement bound, best
// first.
type Fleet struct {
	gpus   []GPU
	byKey  map[string]int
	ledger *Ledger
	params placementParams
	// newestNanos is the newest sample's time: if even it is stale, the
	// engine degrades without scanning.
	newestNanos int64
	// maxTotalMB is the largest GPU: placing needMB anywhere costs at least
	// needMB/maxTotalMB of headroom, which tightens the bounds per model.
	maxTotalMB int64
}

// placementParams are the config values a compiled fleet depends on.
type placementParams struct {
	weights      PlacementWeights
	ideal, max   float64
	staleAfterNs int64
}

// NewFleet compiles samples (the latest per GPU; older duplicates of a GPU
// are ignored) with the engine's placement settings. Reservations are read
// from ledger; a nil ledger means none.
func (e *Engine) NewFleet(samples []telemetry.Sample, ledger *Ledger) *Fleet {
	if ledger == nil {
		ledger = NewLedger()
	}
	f := &Fleet{ledger: ledger, params: e.params, gpus: make([]GPU, 0, len(samples))}
	seen := make(map[string]int, len(samples))
	for _, s := range samples {
		key := telemetry.Key(s.Host, s.Index)
		if i, ok := seen[key]; ok {
			if s.Timestamp.After(f.gpus[i].Sample.Timestamp) {
				f.gpus[i].Sample = s
			}
			continue
		}
		seen[key] = len(f.gpus)
		f.gpus = append(f.gpus, GPU{Sample: s, Key: key})
	}
	for i := range f.gpus {
		g := &f.gpus[i]
		// Free memory beyond the total is a bad reading; capping it keeps the
		// headroom bound valid.
		g.Sample.MemoryFreeMB = min(max(g.Sample.MemoryFreeMB, 0), max(g.Sample.MemoryTotalMB, 0))
		f.maxTotalMB = max(f.maxTotalMB, g.Sample.MemoryTotalMB)
		g.Ref = GPURef{Host: g.Sample.Host, Index: g.Sample.Index, UUID: g.Sample.UUID, Name: g.Sample.Name}
		g.utilizationUnknown = slices.Contains(g.Sample.FailedReads, telemetry.ReadUtilization)
		g.temperatureUnknown = slices.Contains(g.Sample.FailedReads, telemetry.ReadTemperature)
		g.slot = ledger.slot(g.Key)
		ts := g.Sample.Timestamp.UnixNano()
		g.staleAtNanos = ts + e.params.staleAfterNs
		f.newestNanos = max(f.newestNanos, ts)
		g.bound, _ = e.placement(g, g.Sample.MemoryFreeMB, 0)
	}
	slices.SortFunc(f.gpus, func(a, b GPU) int {
		if c := cmp.Compare(b.bound, a.bound); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	clear(seen)
	for i := range f.gpus {
		seen[f.gpus[i].Key] = i
	}
	f.byKey = seen
	return f
}

// Lookup finds a GPU by key ("<host>/<index>").
func (f *Fleet) Lookup(key string) (*GPU, bool) {
	if f == nil {
		return nil, false
	}
	i, ok := f.byKey[key]
	if !ok {
		return nil, false
	}
	return &f.gpus[i], true
}

// ReservedMB is the memory reserved on g at now.
func (f *Fleet) ReservedMB(g *GPU, now time.Time) int64 {
	return f.ledger.reservedAt(g.slot, now.UnixNano())
}

// GPUs returns the fleet's GPUs, best placement bound first. Do not modify them.
func (f *Fleet) GPUs() []GPU { return f.gpus }

// Ledger returns the reservation ledger the fleet reads.
func (f *Fleet) Ledger() *Ledger { return f.ledger }

// Len is the number of GPUs.
func (f *Fleet) Len() int {
	if f == nil {
		return 0
	}
	return len(f.gpus)
}

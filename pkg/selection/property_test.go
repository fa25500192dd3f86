package selection

import (
	"cmp"
	"errors"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// world is one random selection problem.
type world struct {
	engine *Engine
	fleet  *Fleet
	query  Query
}

func drawConstraints(t *rapid.T, cat *catalog.Catalog, hosts []string) Constraints {
	var c Constraints
	ids := make([]string, len(cat.Models))
	for i := range cat.Models {
		ids[i] = cat.Models[i].ID
	}
	if rapid.Bool().Draw(t, "limit memory") {
		c.MaxGPUMemoryMB = rapid.Int64Range(1000, 70000).Draw(t, "max_gpu_memory_mb")
	}
	if rapid.Bool().Draw(t, "allow") && len(ids) > 0 {
		c.AllowModels = rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 1, 8, rapid.ID[string]).Draw(t, "allow_models")
	}
	if rapid.Bool().Draw(t, "deny") && len(ids) > 0 {
		c.DenyModels = rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 1, 8, rapid.ID[string]).Draw(t, "deny_models")
	}
	if rapid.Bool().Draw(t, "context") {
		c.MinContextLength = rapid.SampledFrom([]int{4096, 32768, 131072}).Draw(t, "min_context_length")
	}
	if rapid.Bool().Draw(t, "min score") {
		c.MinScore = rapid.Float64Range(0, 0.9).Draw(t, "min_score")
	}
	if rapid.Bool().Draw(t, "quantizations") {
		c.Quantizations = rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"fp16", "q8_0", "q4_k_m"}), 1, 2, rapid.ID[string]).Draw(t, "quantizations")
	}
	if rapid.Bool().Draw(t, "hosts") && len(hosts) > 0 {
		c.Hosts = rapid.SliceOfNDistinct(rapid.SampledFrom(hosts), 1, 3, rapid.ID[string]).Draw(t, "hosts")
	}
	if rapid.Bool().Draw(t, "temperature") {
		c.MaxTemperatureC = rapid.Float64Range(40, 90).Draw(t, "max_temperature_c")
	}
	if rapid.Bool().Draw(t, "utilization") {
		c.MaxUtilizationPct = rapid.Float64Range(10, 100).Draw(t, "max_utilization_pct")
	}
	return c
}

func drawWorld(t *rapid.T, eps float64) world {
	cat := syntheticCatalog(t, rapid.IntRange(1, 40).Draw(t, "models"), rapid.Uint64().Draw(t, "catalog seed"))
	cfg := DefaultConfig()
	cfg.TieEpsilon = eps
	cfg.Alternatives = rapid.IntRange(0, 4).Draw(t, "alternatives")
	cfg.BenchmarkScoring = rapid.Float64Range(0, 1).Draw(t, "scoring") > 0.1
	e, err := NewEngine(cat, cfg)
	if err != nil {
		t.Fatal(err)
	}
	samples := syntheticSamples(rapid.IntRange(0, 48).Draw(t, "gpus"), rapid.Uint64().Draw(t, "fleet seed"), t0)
	var hosts []string
	for i := range samples {
		// Some samples are stale, some from the future (clock skew).
		samples[i].Timestamp = t0.Add(time.Duration(rapid.IntRange(-30, 2).Draw(t, "age s")) * time.Second)
		// Some reads failed: their fields hold 0, which is no measurement.
		if failed := rapid.IntRange(0, 5).Draw(t, "failed read"); failed == 1 {
			samples[i].FailedReads, samples[i].UtilizationGPUPct = []string{telemetry.ReadUtilization}, 0
		} else if failed == 2 {
			samples[i].FailedReads, samples[i].TemperatureC = []string{telemetry.ReadTemperature}, 0
		}
		if !slices.Contains(hosts, samples[i].Host) {
			hosts = append(hosts, samples[i].Host)
		}
	}
	ledger := NewLedger()
	for i := range rapid.IntRange(0, 6).Draw(t, "reservations") {
		if len(samples) == 0 {
			break
		}
		s := rapid.SampledFrom(samples).Draw(t, "reserved gpu")
		ledger.Reserve(Reservation{ID: string(rune('a' + i)), GPUKey: s.Key(), MemoryMB: rapid.Int64Range(1, 30000).Draw(t, "reserved mb"), At: t0, Expires: t0.Add(time.Minute)})
	}
	req := Request{
		TaskCategory: rapid.SampledFrom([]string{"code", "math", "general"}).Draw(t, "category"),
		Mode:         rapid.SampledFrom([]Mode{"", ModeBenchmark, ModeMultiCategory, ModeGPUAware}).Draw(t, "mode"),
		Constraints:  drawConstraints(t, cat, hosts),
	}
	return world{engine: e, fleet: e.NewFleet(samples, ledger), query: Query{Request: req, Now: t0, Seed: rapid.Uint64().Draw(t, "seed")}}
}

// bruteForce scores every feasible (model, GPU) pair without pruning, checking
// constraints from the request directly rather than through the filters.
func bruteForce(w world, mode Mode) []candidate {
	e, q, f := w.engine, &w.query, w.fleet
	rc := e.categories[q.Request.TaskCategory]
	list := rc.multi
	if mode == ModeBenchmark {
		list = rc.benchmark
	}
	var out []candidate
	for mi := range list {
		rm := &list[mi]
		if !modelSatisfies(&q.Request.Constraints, rm) {
			continue
		}
		if mode != ModeGPUAware {
			out = append(out, candidate{rm: rm, gpu: -1, score: rm.rank, placement: 1, parts: [3]float64{1, 1, 1}})
			continue
		}
		for gi := range f.gpus {
			g := &f.gpus[gi]
			free := g.Sample.MemoryFreeMB - f.ledger.ReservedMB(g.Key, q.Now)
			if !gpuSatisfies(&q.Request.Constraints, &e.cfg, g, q.Now) || free < rm.model.GPUMemoryMB {
				continue
			}
			p, parts := e.placement(g, free, rm.model.GPUMemoryMB)
			out = append(out, candidate{rm: rm, gpu: gi, score: rm.rank * p, placement: p, parts: parts})
		}
	}
	return out
}

func modelSatisfies(c *Constraints, rm *rankedModel) bool {
	m := rm.model
	return (c.MaxGPUMemoryMB == 0 || m.GPUMemoryMB <= c.MaxGPUMemoryMB) &&
		(len(c.AllowModels) == 0 || slices.Contains(c.AllowModels, m.ID)) &&
		!slices.Contains(c.DenyModels, m.ID) &&
		m.ContextLength >= c.MinContextLength &&
		(len(c.Quantizations) == 0 || slices.Contains(c.Quantizations, m.Quantization)) &&
		rm.quality >= c.MinScore
}

func gpuSatisfies(c *Constraints, cfg *Config, g *GPU, now time.Time) bool {
	s := &g.Sample
	tempUnknown := slices.Contains(s.FailedReads, telemetry.ReadTemperature)
	utilUnknown := slices.Contains(s.FailedReads, telemetry.ReadUtilization)
	temperatureOK := c.MaxTemperatureC == 0 // an unknown temperature meets only the configured limit
	if !tempUnknown {
		temperatureOK = s.TemperatureC < cfg.MaxTemperatureC && (c.MaxTemperatureC == 0 || s.TemperatureC <= c.MaxTemperatureC)
	}
	return !s.Stale(now, cfg.StaleAfter()) && s.Healthy && temperatureOK &&
		(c.MaxUtilizationPct == 0 || (!utilUnknown && s.UtilizationGPUPct <= c.MaxUtilizationPct)) &&
		(len(c.Hosts) == 0 || slices.Contains(c.Hosts, s.Host))
}

func in01(v float64) bool { return v >= 0 && v <= 1 }

func checkScores(t *rapid.T, what string, s Scores, final float64) {
	for _, v := range []float64{s.Quality, s.Confidence, s.Placement, s.Utilization, s.Headroom, s.Temperature, final} {
		if !in01(v) {
			t.Fatalf("%s: score %v outside [0,1] in %+v final %v", what, v, s, final)
		}
	}
}

func TestPropertySelection(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		eps := rapid.SampledFrom([]float64{0, 0.01, 0.05}).Draw(t, "eps")
		w := drawWorld(t, eps)
		res, err := w.engine.Select(w.query, w.fleet)
		mode, _ := w.engine.effectiveMode(w.query.Request.Mode)
		if w.query.Request.Mode == "" {
			mode, _ = w.engine.effectiveMode(w.engine.cfg.DefaultMode)
		}
		if mode == ModeGPUAware && (w.fleet.Len() == 0 || w.query.Now.UnixNano() > w.fleet.newestNanos+w.engine.params.staleAfterNs) {
			mode = ModeMultiCategory
		}
		all := bruteForce(w, mode)
		if len(all) == 0 {
			if !errors.Is(err, ErrNoCandidate) {
				t.Fatalf("no feasible candidate, but Select returned %v (%v)", err, res.Reason)
			}
			return
		}
		if err != nil {
			t.Fatalf("%d feasible candidates, but Select failed: %v", len(all), err)
		}
		if res.Mode != mode {
			t.Fatalf("mode %s, want %s", res.Mode, mode)
		}
		// The choice satisfies every constraint.
		rm := rankedModel{model: res.Model, quality: res.Scores.Quality}
		if !modelSatisfies(&w.query.Request.Constraints, &rm) {
			t.Fatalf("chosen model %s violates %+v", res.Model.ID, w.query.Request.Constraints)
		}
		if (res.GPU != nil) != (mode == ModeGPUAware) {
			t.Fatalf("mode %s but GPU %v", mode, res.GPU)
		}
		if res.GPU != nil {
			if !gpuSatisfies(&w.query.Request.Constraints, &w.engine.cfg, res.GPU, w.query.Now) {
				t.Fatalf("chosen GPU %s (stale, unhealthy or constrained out) in %+v", res.GPU.Key, res.GPU.Sample)
			}
			if free := res.GPU.Sample.MemoryFreeMB - w.fleet.ledger.ReservedMB(res.GPU.Key, w.query.Now); free < res.Model.GPUMemoryMB {
				t.Fatalf("chosen GPU has %d MB free, model needs %d", free, res.Model.GPUMemoryMB)
			}
		}
		// No feasible candidate scores higher (beyond the tie band).
		best := slices.MaxFunc(all, func(a, b candidate) int { return cmp.Compare(a.score, b.score) }).score
		if res.FinalScore < best-eps-1e-12 {
			t.Fatalf("chose %.6f, but %.6f was feasible (eps %v)", res.FinalScore, best, eps)
		}
		checkScores(t, "chosen", res.Scores, res.FinalScore)
		// Every near-tie was in the draw.
		ties := 0
		for _, c := range all {
			if c.score >= best-eps {
				ties++
			}
		}
		if res.Ties != ties {
			t.Fatalf("picked among %d near-ties, want %d", res.Ties, ties)
		}
		// Alternatives are the next-best other models at their best placement.
		perModel := map[string]float64{}
		for _, c := range all {
			if c.rm.model != res.Model {
				perModel[c.rm.model.ID] = max(perModel[c.rm.model.ID], c.score)
			}
		}
		var want []float64
		for _, s := range perModel {
			want = append(want, s)
		}
		slices.Sort(want)
		slices.Reverse(want)
		want = want[:min(len(want), w.engine.cfg.Alternatives)]
		if len(res.Alternatives) != len(want) {
			t.Fatalf("%d alternatives, want %d", len(res.Alternatives), len(want))
		}
		for i, a := range res.Alternatives {
			checkScores(t, "alternative", a.Scores, a.FinalScore)
			if !approx(a.FinalScore, want[i]) {
				t.Fatalf("alternative %d scores %.6f, want %.6f", i, a.FinalScore, want[i])
			}
		}
	})
}

func TestPropertyAddingAConstraintNeverRaisesTheScore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, 0) // no tie band: the chosen score is the best score
		before, err := w.engine.Select(w.query, w.fleet)
		if err != nil {
			return
		}
		var hosts []string
		for _, g := range w.fleet.gpus {
			hosts = append(hosts, g.Sample.Host)
		}
		extra := drawConstraints(t, w.engine.catalog, hosts)
		c := &w.query.Request.Constraints
		// Tighten: add the drawn constraints on top of the existing ones.
		if extra.MaxGPUMemoryMB > 0 && (c.MaxGPUMemoryMB == 0 || extra.MaxGPUMemoryMB < c.MaxGPUMemoryMB) {
			c.MaxGPUMemoryMB = extra.MaxGPUMemoryMB
		}
		if len(extra.AllowModels) > 0 && len(c.AllowModels) == 0 {
			c.AllowModels = extra.AllowModels
		}
		c.DenyModels = append(slices.Clone(c.DenyModels), extra.DenyModels...)
		c.MinContextLength = max(c.MinContextLength, extra.MinContextLength)
		c.MinScore = max(c.MinScore, extra.MinScore)
		if len(extra.Hosts) > 0 && len(c.Hosts) == 0 {
			c.Hosts = extra.Hosts
		}
		if extra.MaxUtilizationPct > 0 && (c.MaxUtilizationPct == 0 || extra.MaxUtilizationPct < c.MaxUtilizationPct) {
			c.MaxUtilizationPct = extra.MaxUtilizationPct
		}
		after, err := w.engine.Select(w.query, w.fleet)
		if err != nil {
			if !errors.Is(err, ErrNoCandidate) {
				t.Fatalf("tightened request failed: %v", err)
			}
			return
		}
		if after.FinalScore > before.FinalScore+1e-12 {
			t.Fatalf("adding constraints raised the score from %.6f to %.6f", before.FinalScore, after.FinalScore)
		}
	})
}

func TestPropertyStaleOrUnhealthyGPUsAreNeverChosen(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cat := syntheticCatalog(t, 10, rapid.Uint64().Draw(t, "catalog seed"))
		e := newTestEngine(t, cat, nil)
		samples := syntheticSamples(rapid.IntRange(1, 32).Draw(t, "gpus"), rapid.Uint64().Draw(t, "fleet seed"), t0)
		for i := range samples {
			switch rapid.IntRange(0, 2).Draw(t, "state") {
			case 0:
				samples[i].Timestamp = t0.Add(-time.Hour)
			case 1:
				samples[i].Healthy = false
			}
		}
		res, err := e.Select(Query{Request: Request{TaskCategory: "general"}, Now: t0, Seed: rapid.Uint64().Draw(t, "seed")}, e.NewFleet(samples, nil))
		if err != nil || res.GPU == nil {
			return
		}
		if res.GPU.Sample.Timestamp.Before(t0.Add(-e.cfg.StaleAfter())) || !res.GPU.Sample.Healthy {
			t.Fatalf("chose %s: %+v", res.GPU.Key, res.GPU.Sample)
		}
	})
}

// Deciding again on only the GPUs a decision event records (the chosen one,
// TopGPU and the alternatives', with the memory reserved on them) picks the
// same model and GPU: what makes a recorded decision replayable.
func TestPropertyRecordedGPUsReproduceThePick(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, rapid.SampledFrom([]float64{0, 0.01, 0.05, 0.2}).Draw(t, "tie epsilon"))
		res, err := w.engine.Select(w.query, w.fleet)
		if err != nil {
			t.Skip("no decision to replay")
		}
		keys := []string{}
		if res.GPU != nil {
			keys = append(keys, res.GPU.Key)
		}
		if res.TopGPU != nil {
			keys = append(keys, res.TopGPU.Key)
		}
		for _, a := range res.Alternatives {
			if a.GPU != nil {
				keys = append(keys, telemetry.Key(a.GPU.Host, a.GPU.Index))
			}
		}
		var samples []telemetry.Sample
		ledger := NewLedger()
		for _, k := range keys {
			g, ok := w.fleet.Lookup(k)
			if !ok {
				t.Fatalf("recorded GPU %s is not in the fleet", k)
			}
			if slices.ContainsFunc(samples, func(s telemetry.Sample) bool { return s.Key() == k }) {
				continue
			}
			samples = append(samples, g.Sample)
			// What the event records: the reservations the selection saw,
			// here the ledger's, which nothing changed since.
			mb, ok := res.ReservedMB(k)
			if !ok || mb != w.fleet.ReservedMB(g, w.query.Now) {
				t.Fatalf("result's reservation on %s = %d (%v), ledger has %d", k, mb, ok, w.fleet.ReservedMB(g, w.query.Now))
			}
			if mb > 0 {
				ledger.Reserve(Reservation{ID: "recorded/" + k, GPUKey: k, MemoryMB: mb, At: w.query.Now, Expires: w.query.Now.Add(time.Hour)})
			}
		}
		again, err := w.engine.Select(w.query, w.engine.NewFleet(samples, ledger))
		if err != nil {
			t.Fatalf("replay on %v: %v", keys, err)
		}
		gpu := func(r Result) string {
			if r.GPU == nil {
				return "-"
			}
			return r.GPU.Key
		}
		if again.Model.ID != res.Model.ID || gpu(again) != gpu(res) || again.FinalScore != res.FinalScore {
			t.Fatalf("decided %s on %s (%v), replayed on %v as %s on %s (%v)",
				res.Model.ID, gpu(res), res.FinalScore, keys, again.Model.ID, gpu(again), again.FinalScore)
		}
	})
}

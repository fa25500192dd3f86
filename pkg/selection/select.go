package selection

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

// Query is one selection: the request plus the inputs that make the result
// reproducible. The same engine, fleet, query and seed give the same result.
type Query struct {
	Request Request
	Now     time.Time
	// Seed drives the pick among near-ties, so that replicas answering at the
	// same instant do not herd onto one GPU, and replay can repeat it.
	Seed uint64

	nowNanos        int64
	maxTemperatureC float64
}

// Result is a decision that explains itself. Model and GPU point into the
// engine's catalog and the fleet: treat them as read-only.
type Result struct {
	RequestedMode Mode
	Mode          Mode
	// Downgrade says why Mode is below RequestedMode because of a config
	// switch ("" when it is not).
	Downgrade string
	// Degraded: gpu_aware was asked but no fresh telemetry was known, so the
	// engine fell back to multi_category (benchmark while that is off).
	Degraded        bool
	Model           *catalog.Model
	PrimaryCategory bool
	// GPU is nil when no GPU was placed (benchmark, multi_category, degraded).
	GPU *GPU
	// TopGPU is the GPU of the highest-scoring candidate (nil without a
	// GPU). A near-tie may have been chosen instead; replaying the decision
	// needs this GPU too, to see the same best score and so the same ties.
	TopGPU       *GPU
	FinalScore   float64
	Scores       Scores
	Reason       string
	Alternatives []Alternative
	// TelemetryAgeMs: the chosen GPU's sample age; when no GPU was placed the
	// newest sample's age; -1 when there is none.
	TelemetryAgeMs float64
	// Candidates counts scored (model, GPU) pairs; Ties those within
	// TieEpsilon of the best, among which the pick was random.
	Candidates int
	Ties       int
	TieSeed    uint64
	// seen holds the memory reserved on each GPU the result names (GPU,
	// TopGPU, the alternatives') as the selection read it: see ReservedMB.
	// The chosen and the top candidate, and every model's best kept for the
	// alternatives (one more than listed), fit.
	seen  [MaxAlternatives + 3]seenGPU
	nSeen int
}

type seenGPU struct {
	key        string
	reservedMB int64
}

// ReservedMB is the memory reservation the selection saw on the GPU called
// key, one of those the result names (GPU, TopGPU, the alternatives'); ok is
// false for any other. The selection reads each GPU's reservations once, so
// this is what every score on that GPU used, whatever the ledger holds now:
// the decision event records it, and replaying the event reproduces the pick.
func (r *Result) ReservedMB(key string) (mb int64, ok bool) {
	for _, g := range r.seen[:r.nSeen] {
		if g.key == key {
			return g.reservedMB, true
		}
	}
	return 0, false
}

// noteSeen records what the selection read for GPU gi, once per GPU.
func (r *Result) noteSeen(s *scratch, f *Fleet, gi int) {
	if gi < 0 || r.nSeen == len(r.seen) {
		return
	}
	key := f.gpus[gi].Key
	if _, ok := r.ReservedMB(key); ok {
		return
	}
	r.seen[r.nSeen] = seenGPU{key: key, reservedMB: s.reservedMB(f, gi)}
	r.nSeen++
}

// candidate is a scored (model, GPU) pair; gpu is -1 when no GPU is placed.
type candidate struct {
	rm        *rankedModel
	gpu       int
	score     float64
	placement float64
	parts     [3]float64
}

const (
	gpuUnknown uint8 = iota
	gpuAdmitted
	gpuRejected
)

// scratch is per-request working memory, pooled so that a selection does
// not allocate beyond its result.
type scratch struct {
	q             Query
	modelFilters  []ModelFilter
	gpuFilters    []GPUFilter
	modelRejects  []int
	gpuRejects    []int
	memoryMisfits int
	gpuState      []uint8
	// reserved caches each GPU's reservations, read once per selection
	// (valid where reservedRead is set): a parallel placement cannot make
	// two candidates on one GPU, or the event, see different values.
	reserved     []int64
	reservedRead []bool
	// ties holds every candidate that was within epsilon of the best score
	// when it was scored; the pick re-checks against the final best.
	ties []candidate
	// bests holds each model's best candidate, best first, capped at
	// alternatives+1 entries.
	bests      []candidate
	best       float64
	candidates int
	models     int
	buf        []byte
}

func (s *scratch) reset(q *Query, gpus int) {
	s.q = *q
	s.modelFilters = s.modelFilters[:0]
	s.gpuFilters = s.gpuFilters[:0]
	s.modelRejects = s.modelRejects[:0]
	s.gpuRejects = s.gpuRejects[:0]
	s.memoryMisfits = 0
	if cap(s.gpuState) < gpus {
		s.gpuState = make([]uint8, gpus)
	}
	s.gpuState = s.gpuState[:gpus]
	clear(s.gpuState)
	if cap(s.reserved) < gpus {
		s.reserved = make([]int64, gpus)
		s.reservedRead = make([]bool, gpus)
	}
	s.reserved = s.reserved[:gpus]
	s.reservedRead = s.reservedRead[:gpus]
	clear(s.reservedRead)
	s.ties = s.ties[:0]
	s.bests = s.bests[:0]
	s.best = -1
	s.candidates = 0
	s.models = 0
	s.buf = s.buf[:0]
	for _, f := range modelFilters {
		if f.Active(&s.q) {
			s.modelFilters = append(s.modelFilters, f)
			s.modelRejects = append(s.modelRejects, 0)
		}
	}
	for _, f := range gpuFilters {
		if f.Active(&s.q) {
			s.gpuFilters = append(s.gpuFilters, f)
			s.gpuRejects = append(s.gpuRejects, 0)
		}
	}
}

func (s *scratch) admitModel(rm *rankedModel) bool {
	for i, f := range s.modelFilters {
		if !f.AllowModel(&s.q, rm.model, rm.quality) {
			s.modelRejects[i]++
			return false
		}
	}
	return true
}

func (s *scratch) admitGPU(gi int, g *GPU) bool {
	switch s.gpuState[gi] {
	case gpuAdmitted:
		return true
	case gpuRejected:
		return false
	}
	for i, f := range s.gpuFilters {
		if !f.AllowGPU(&s.q, g) {
			s.gpuRejects[i]++
			s.gpuState[gi] = gpuRejected
			return false
		}
	}
	s.gpuState[gi] = gpuAdmitted
	return true
}

// reservedMB is the memory reserved on GPU gi at the query's time, read
// from the ledger the first time this selection asks.
func (s *scratch) reservedMB(f *Fleet, gi int) int64 {
	if !s.reservedRead[gi] {
		s.reserved[gi] = f.ledger.reservedAt(f.gpus[gi].slot, s.q.nowNanos)
		s.reservedRead[gi] = true
	}
	return s.reserved[gi]
}

// altThreshold is the score a model's best must beat to be listed among
// the alternatives; -1 while the list is not full.
func (s *scratch) altThreshold(alternatives int) float64 {
	if len(s.bests) <= alternatives {
		return -1
	}
	return s.bests[alternatives].score
}

// consider records a scored candidate.
func (s *scratch) consider(c candidate, eps float64) {
	s.candidates++
	if c.score >= s.best-eps {
		s.ties = append(s.ties, c)
	}
	if c.score > s.best {
		s.best = c.score
	}
}

// keepBest inserts a model's best candidate into the capped, sorted list.
func (s *scratch) keepBest(c candidate, alternatives int) {
	i := len(s.bests)
	for i > 0 && s.bests[i-1].score < c.score {
		i--
	}
	if i > alternatives {
		return
	}
	s.bests = slices.Insert(s.bests, i, c)
	if len(s.bests) > alternatives+1 {
		s.bests = s.bests[:alternatives+1]
	}
}

// Select picks a model (and, in gpu_aware mode, a GPU) for q. It returns
// ErrInvalidRequest, ErrUnknownCategory, ErrUnknownModel, ErrNoCandidate (as a
// *NoCandidateError) or ErrFleetMismatch, wrapped with details.
func (e *Engine) Select(q Query, f *Fleet) (Result, error) {
	if err := validateRequest(&q.Request); err != nil {
		return Result{}, err
	}
	rc, ok := e.categories[q.Request.TaskCategory]
	if !ok {
		return Result{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownCategory, q.Request.TaskCategory, strings.Join(e.categoryNames(), ", "))
	}
	// An allow list naming no registered model is a mistake worth a 404, not
	// a narrower search; a deny list naming one denies nothing.
	for _, id := range q.Request.Constraints.AllowModels {
		if _, ok := e.catalog.Model(id); !ok {
			return Result{}, fmt.Errorf("%w: allow_models lists %q, which is not in the registry", ErrUnknownModel, id)
		}
	}
	res := Result{RequestedMode: q.Request.Mode, TieSeed: q.Seed, TelemetryAgeMs: -1}
	if res.RequestedMode == "" {
		res.RequestedMode = e.cfg.DefaultMode
	}
	res.Mode, res.Downgrade = e.effectiveMode(res.RequestedMode)

	q.nowNanos = q.Now.UnixNano()
	q.maxTemperatureC = e.cfg.MaxTemperatureC
	s := e.scratch.Get().(*scratch)
	defer e.scratch.Put(s)
	s.reset(&q, f.Len())

	if f.Len() > 0 {
		if f.params != e.params {
			return Result{}, ErrFleetMismatch
		}
		res.TelemetryAgeMs = ageMs(q.nowNanos, f.newestNanos)
	}
	if res.Mode == ModeGPUAware && (f.Len() == 0 || q.nowNanos > f.newestNanos+e.params.staleAfterNs) {
		res.Degraded = true
		res.Mode = ModeMultiCategory
		if !e.cfg.MultiCategory {
			res.Mode = ModeBenchmark
		}
	}

	// With multi_category off there is no multi-category registry (the
	// seed's "fall back to single-category"): every mode then draws from the
	// category's primary models only, without confidence factors.
	list := rc.multi
	if res.Mode == ModeBenchmark || !e.cfg.MultiCategory {
		list = rc.benchmark
	}
	if res.Mode == ModeGPUAware {
		e.scanPlaced(s, list, f)
	} else {
		e.scanModels(s, list)
	}
	if s.best < 0 {
		return Result{}, e.noCandidate(s, &res, len(list), f)
	}

	chosen := e.pick(s, &res, f)
	if top := s.bests[0]; top.gpu >= 0 {
		res.TopGPU = &f.gpus[top.gpu]
	}
	res.Model = chosen.rm.model
	res.PrimaryCategory = chosen.rm.model.PrimaryCategory() == rc.category.Name
	res.FinalScore = chosen.score
	res.Scores = scoresOf(chosen)
	if chosen.gpu >= 0 {
		res.GPU = &f.gpus[chosen.gpu]
		res.TelemetryAgeMs = ageMs(q.nowNanos, res.GPU.Sample.Timestamp.UnixNano())
	}
	res.Candidates = s.candidates
	res.Alternatives = e.alternatives(s, chosen, f)
	res.Reason = e.reason(s, &res, chosen)
	res.noteSeen(s, f, chosen.gpu)
	res.noteSeen(s, f, s.bests[0].gpu)
	for _, c := range s.bests {
		if c.rm != chosen.rm {
			res.noteSeen(s, f, c.gpu)
		}
	}
	return res, nil
}

// scanPlaced scores (model, GPU) pairs, models and GPUs each in order of
// their bound, and stops a scan as soon as its bound can no longer produce
// the best pick, a near-tie or a listed alternative.
func (e *Engine) scanPlaced(s *scratch, list []rankedModel, f *Fleet) {
	eps := e.cfg.TieEpsilon
	alts := e.cfg.Alternatives
	maxBound := f.gpus[0].bound
	for mi := range list {
		rm := &list[mi]
		altThr := s.altThreshold(alts)
		if ub := rm.rank * maxBound; ub < s.best-eps && ub <= altThr {
			break
		}
		s.models++
		if !s.admitModel(rm) {
			continue
		}
		need := rm.model.GPUMemoryMB
		// Every placement of this model loses at least this much headroom.
		cost := e.headroomShare * float64(need) / float64(max(f.maxTotalMB, 1))
		best := candidate{score: -1}
		for gi := range f.gpus {
			g := &f.gpus[gi]
			if ub := rm.rank * (g.bound - cost); ub < s.best-eps && (ub <= best.score || ub <= altThr) {
				break
			}
			if !s.admitGPU(gi, g) {
				continue
			}
			free := g.Sample.MemoryFreeMB - s.reservedMB(f, gi)
			if free < need {
				s.memoryMisfits++
				continue
			}
			p, parts := e.placement(g, free, need)
			c := candidate{rm: rm, gpu: gi, score: rm.rank * p, placement: p, parts: parts}
			s.consider(c, eps)
			if c.score > best.score {
				best = c
			}
		}
		if best.score >= 0 {
			s.keepBest(best, alts)
		}
	}
}

// scanModels scores models alone (benchmark, multi_category, degraded).
func (e *Engine) scanModels(s *scratch, list []rankedModel) {
	eps := e.cfg.TieEpsilon
	alts := e.cfg.Alternatives
	for mi := range list {
		rm := &list[mi]
		if rm.rank < s.best-eps && rm.rank <= s.altThreshold(alts) {
			break
		}
		s.models++
		if !s.admitModel(rm) {
			continue
		}
		c := candidate{rm: rm, gpu: -1, score: rm.rank, placement: 1, parts: [3]float64{1, 1, 1}}
		s.consider(c, eps)
		s.keepBest(c, alts)
	}
}

// pick chooses among the candidates within TieEpsilon of the best score
// the one whose tieHash under the query's seed is lowest: uniform over the
// near-ties for random seeds, and independent of the other candidates, so
// that re-deciding on only the recorded GPUs (the chosen one, TopGPU and the
// alternatives') picks the same one again.
func (e *Engine) pick(s *scratch, res *Result, f *Fleet) candidate {
	floor := s.best - e.cfg.TieEpsilon
	var chosen candidate
	var lowest uint64
	n := 0
	for i := range s.ties {
		c := &s.ties[i]
		if c.score < floor {
			continue
		}
		gpu := ""
		if c.gpu >= 0 {
			gpu = f.gpus[c.gpu].Key
		}
		// n >= 1 at the end: the candidate that set the best score is a tie.
		if h := tieHash(s.q.Seed, c.rm.model.ID, gpu); n == 0 || h < lowest {
			chosen, lowest = *c, h
		}
		n++
	}
	res.Ties = n
	return chosen
}

// tieHash mixes the seed with a candidate's model id and GPU key (FNV-1a,
// then splitmix64): stable across processes and versions, unlike maphash.
func tieHash(seed uint64, model, gpu string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(model); i++ {
		h = (h ^ uint64(model[i])) * prime
	}
	h = (h ^ '/') * prime
	for i := 0; i < len(gpu); i++ {
		h = (h ^ uint64(gpu[i])) * prime
	}
	return splitmix64(h ^ seed)
}

// alternatives lists the best placement of the next-best other models.
func (e *Engine) alternatives(s *scratch, chosen candidate, f *Fleet) []Alternative {
	n := 0
	for _, c := range s.bests {
		if c.rm != chosen.rm {
			n++
		}
	}
	n = min(n, e.cfg.Alternatives)
	if n == 0 {
		return nil
	}
	out := make([]Alternative, 0, n)
	for _, c := range s.bests {
		if c.rm == chosen.rm || len(out) == n {
			continue
		}
		a := Alternative{ModelID: c.rm.model.ID, FinalScore: c.score, Scores: scoresOf(c)}
		if c.gpu >= 0 {
			a.GPU = &f.gpus[c.gpu].Ref
		}
		out = append(out, a)
	}
	return out
}

func scoresOf(c candidate) Scores {
	return Scores{
		Quality: c.rm.quality, Confidence: c.rm.confidence, Placement: c.placement,
		Utilization: c.parts[0], Headroom: c.parts[1], Temperature: c.parts[2],
	}
}

// effectiveMode applies the feature switches: each one off downgrades a
// request one step (gpu_aware -> multi_category -> benchmark).
func (e *Engine) effectiveMode(requested Mode) (Mode, string) {
	mode, why := requested, ""
	if mode == ModeGPUAware && !e.cfg.GPUAware {
		mode, why = ModeMultiCategory, "gpu_aware is switched off"
	}
	if mode == ModeMultiCategory && !e.cfg.MultiCategory {
		mode = ModeBenchmark
		if why == "" {
			why = "multi_category is switched off"
		} else {
			why = "gpu_aware and multi_category are switched off"
		}
	}
	return mode, why
}

func (e *Engine) categoryNames() []string {
	names := make([]string, 0, len(e.categories))
	for n := range e.categories {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func ageMs(nowNanos, thenNanos int64) float64 {
	return math.Max(0, float64(nowNanos-thenNanos)/1e6)
}

// splitmix64 is a tiny, good-enough mixer: the pick needs reproducibility
// and no allocation, not cryptographic quality.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

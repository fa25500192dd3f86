// Package whatif re-scores recorded decisions under another selection config
// or other benchmark weights: each selection event carries the decision's
// inputs (request, tie seed, the GPUs it saw with their reservations), so the
// same engine code can decide it again and say whether the choice changes.
package whatif

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Sentinel errors of the package.
var (
	// ErrSpec: the what-if file is not a JSON object of config fields and weights.
	ErrSpec = errors.New("bad what-if spec")
	// ErrApply: the spec does not apply to the current catalog or config.
	ErrApply = errors.New("what-if spec does not apply")
)

// WeightsKey is the what-if file's key of the benchmark weight overrides.
const WeightsKey = "weights"

// Spec is a what-if file: selection config fields (any subset, merged onto
// the current config like the registry's config.patch) plus, under
// "weights", benchmark weights per category ({"code": {"HumanEval": 1.5}};
// 0 stops weighing a benchmark, as weights set does).
type Spec struct {
	// ConfigPatch holds the config fields; nil when the file has none.
	ConfigPatch json.RawMessage
	Weights     map[string]map[string]float64
}

// ParseSpec reads a what-if file. Unknown config fields are refused.
func ParseSpec(data []byte) (Spec, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return Spec{}, fmt.Errorf("%w: want a JSON object: %w", ErrSpec, err)
	}
	if fields == nil {
		return Spec{}, fmt.Errorf("%w: want a JSON object, got null", ErrSpec)
	}
	var s Spec
	if raw, ok := fields[WeightsKey]; ok {
		if err := json.Unmarshal(raw, &s.Weights); err != nil {
			return Spec{}, fmt.Errorf("%w: %q must map category -> benchmark -> weight: %w", ErrSpec, WeightsKey, err)
		}
		delete(fields, WeightsKey)
	}
	if len(fields) > 0 {
		patch, err := json.Marshal(fields)
		if err != nil {
			return Spec{}, fmt.Errorf("%w: %w", ErrSpec, err)
		}
		// Decode once now so that a misspelt field fails before any event is read.
		var probe selection.Config
		if err := decodeStrict(patch, &probe); err != nil {
			return Spec{}, fmt.Errorf("%w: config fields: %w", ErrSpec, err)
		}
		s.ConfigPatch = patch
	}
	return s, nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Apply returns cat and cfg with the spec applied. Decoding the patch onto
// a copy of cfg merges objects field by field, as config.patch does; the
// result must pass the config's and the catalog's validation.
func (s Spec) Apply(cat *catalog.Catalog, cfg selection.Config) (*catalog.Catalog, selection.Config, error) {
	if s.ConfigPatch != nil {
		if err := decodeStrict(s.ConfigPatch, &cfg); err != nil {
			return nil, selection.Config{}, fmt.Errorf("%w: config: %w", ErrApply, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, selection.Config{}, fmt.Errorf("%w: %w", ErrApply, err)
	}
	for _, category := range slices.Sorted(maps.Keys(s.Weights)) {
		ws := s.Weights[category]
		for _, bench := range slices.Sorted(maps.Keys(ws)) {
			next, err := cat.WithBenchmarkWeight(category, bench, ws[bench])
			if err != nil {
				return nil, selection.Config{}, fmt.Errorf("%w: weight %s/%s=%v: %w", ErrApply, category, bench, ws[bench], err)
			}
			cat = next
		}
	}
	return cat, cfg, nil
}

// Rescorer decides recorded events again with one engine.
type Rescorer struct {
	engine *selection.Engine
}

// NewRescorer compiles the engine the events are re-scored with.
func NewRescorer(cat *catalog.Catalog, cfg selection.Config) (*Rescorer, error) {
	e, err := selection.NewEngine(cat, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrApply, err)
	}
	return &Rescorer{engine: e}, nil
}

// Outcome is one re-scored decision.
type Outcome struct {
	EventID  string
	Category string
	// Recorded is the model the event chose; New the model chosen now ("" when
	// the decision could not be made again, see Err).
	Recorded, New string
	// Changed: New differs from Recorded and Recorded, decided alone, is not
	// within the new config's tie_epsilon of the new best: not a mere tie.
	Changed bool
	// Err says why no model could be chosen now (e.g. the constraints no
	// longer match anything); such a decision counts as changed.
	Err error
	// Unplaced: the new config asks for GPU placement but the event, decided
	// without it, recorded no GPU, so it was re-scored without placement.
	Unplaced bool
}

// reservationHold keeps a recorded reservation alive for the re-decision,
// which happens at the event's own instant.
const reservationHold = time.Minute

// Rescore decides ev again: the fleet is the GPUs the event recorded, each
// holding its recorded reservations as one, at the event's time and with its
// tie seed, for the event's request.
func (r *Rescorer) Rescore(ev *events.SelectionEvent) Outcome {
	out := Outcome{EventID: ev.EventID, Category: ev.TaskCategory, Recorded: ev.SelectedModel}
	ledger := selection.NewLedger()
	samples := make([]telemetry.Sample, 0, len(ev.GPUs))
	for _, g := range ev.GPUs {
		samples = append(samples, g.Sample)
		if g.ReservedMB > 0 {
			key := g.Sample.Key()
			ledger.Reserve(selection.Reservation{
				ID: "recorded/" + key, GPUKey: key, MemoryMB: g.ReservedMB,
				At: ev.Timestamp, Expires: ev.Timestamp.Add(reservationHold),
			})
		}
	}
	fleet := r.engine.NewFleet(samples, ledger)
	res, err := r.engine.Select(selection.Query{Request: ev.Request, Now: ev.Timestamp, Seed: ev.TieSeed}, fleet)
	if err != nil {
		out.Err = err
		out.Changed = true
		return out
	}
	out.New = res.Model.ID
	out.Unplaced = res.Degraded && !ev.Degraded
	if out.New != out.Recorded {
		out.Changed = !r.stillNearTie(ev, fleet, &res)
	}
	return out
}

// stillNearTie reports whether the recorded model, decided again alone on
// the same fleet, scores within tie_epsilon of the new best: then the new
// pick differs only by the near-tie draw, which depends on which GPUs the
// event recorded, not on the config.
func (r *Rescorer) stillNearTie(ev *events.SelectionEvent, fleet *selection.Fleet, res *selection.Result) bool {
	req := ev.Request
	req.Constraints.AllowModels = []string{ev.SelectedModel}
	alone, err := r.engine.Select(selection.Query{Request: req, Now: ev.Timestamp, Seed: ev.TieSeed}, fleet)
	if err != nil {
		return false
	}
	best := res.FinalScore
	for _, a := range res.Alternatives {
		best = max(best, a.FinalScore)
	}
	return alone.FinalScore >= best-r.engine.Config().TieEpsilon-tieSlack
}

// tieSlack absorbs float rounding in the tie comparison.
const tieSlack = 1e-12

// Transition counts changed decisions of one category from one model to another.
type Transition struct {
	Category string `json:"category"`
	From     string `json:"from"`
	// To is "" for decisions that could not be made again.
	To    string `json:"to"`
	Count int    `json:"count"`
}

// Report sums up a what-if run.
type Report struct {
	// Read is the number of events re-scored; Changed of them would change,
	// Failed of which could not be decided again at all.
	Read    int `json:"events_read"`
	Changed int `json:"changed"`
	Failed  int `json:"failed"`
	// Unplaced counts decisions re-scored without GPU placement although the
	// new config asks for it: they were made without placement and recorded
	// no GPU (see Outcome.Unplaced).
	Unplaced int `json:"unplaced"`
	// ChangedPct is Changed as a percentage of Read.
	ChangedPct float64 `json:"changed_pct"`
	// Transitions are sorted by count, most first.
	Transitions []Transition `json:"transitions"`
	// ChangedEventIDs are the first changed events, in stream order.
	ChangedEventIDs []string `json:"changed_event_ids"`
	// Errors counts, per message, why decisions could not be made again.
	Errors map[string]int `json:"errors,omitempty"`
}

// Tally accumulates outcomes into a Report.
type Tally struct {
	maxIDs int
	rep    Report
	trans  map[Transition]int
}

// NewTally keeps the ids of the first maxIDs changed events.
func NewTally(maxIDs int) *Tally {
	return &Tally{maxIDs: maxIDs, trans: map[Transition]int{}, rep: Report{ChangedEventIDs: []string{}}}
}

// Add counts one outcome.
func (t *Tally) Add(o Outcome) {
	t.rep.Read++
	if o.Unplaced {
		t.rep.Unplaced++
	}
	if !o.Changed {
		return
	}
	t.rep.Changed++
	if o.Err != nil {
		t.rep.Failed++
		if t.rep.Errors == nil {
			t.rep.Errors = map[string]int{}
		}
		t.rep.Errors[errorClass(o.Err)]++
	}
	t.trans[Transition{Category: o.Category, From: o.Recorded, To: o.New}]++
	if len(t.rep.ChangedEventIDs) < t.maxIDs {
		t.rep.ChangedEventIDs = append(t.rep.ChangedEventIDs, o.EventID)
	}
}

// errorClass names an error by its engine sentinel, so that per-event
// details (counts, names) do not make every error its own line.
func errorClass(err error) string {
	for _, s := range []error{selection.ErrNoCandidate, selection.ErrUnknownCategory, selection.ErrInvalidRequest, selection.ErrFleetMismatch} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return err.Error()
}

// Report returns the summary so far.
func (t *Tally) Report() Report {
	rep := t.rep
	rep.ChangedEventIDs = slices.Clone(rep.ChangedEventIDs)
	rep.Errors = maps.Clone(rep.Errors)
	rep.Transitions = make([]Transition, 0, len(t.trans))
	for k, n := range t.trans {
		k.Count = n
		rep.Transitions = append(rep.Transitions, k)
	}
	slices.SortFunc(rep.Transitions, func(a, b Transition) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Category, b.Category),
			cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	if rep.Read > 0 {
		rep.ChangedPct = 100 * float64(rep.Changed) / float64(rep.Read)
	}
	return rep
}

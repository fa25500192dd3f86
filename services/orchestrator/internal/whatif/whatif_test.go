package whatif

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		wantErr     error
		wantPatch   bool
		wantWeights map[string]map[string]float64
	}{
		{name: "empty object", in: `{}`},
		{name: "switch only", in: `{"gpu_aware": false}`, wantPatch: true},
		{
			name: "weights only", in: `{"weights": {"code": {"HumanEval": 1.5}}}`,
			wantWeights: map[string]map[string]float64{"code": {"HumanEval": 1.5}},
		},
		{
			name: "both", in: `{"confidence": {"primary": 0.95}, "weights": {"math": {"MATH": 0}}}`, wantPatch: true,
			wantWeights: map[string]map[string]float64{"math": {"MATH": 0}},
		},
		{name: "not JSON", in: `gpu_aware=false`, wantErr: ErrSpec},
		{name: "not an object", in: `[1]`, wantErr: ErrSpec},
		{name: "null", in: `null`, wantErr: ErrSpec},
		{name: "unknown config field", in: `{"gpu_awar": false}`, wantErr: ErrSpec},
		{name: "wrong type", in: `{"gpu_aware": "no"}`, wantErr: ErrSpec},
		{name: "weights not nested", in: `{"weights": {"code": 1.5}}`, wantErr: ErrSpec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if (s.ConfigPatch != nil) != tc.wantPatch {
				t.Errorf("config patch = %s, want one: %v", s.ConfigPatch, tc.wantPatch)
			}
			if !reflect.DeepEqual(s.Weights, tc.wantWeights) {
				t.Errorf("weights = %v, want %v", s.Weights, tc.wantWeights)
			}
		})
	}
}

func TestSpecApply(t *testing.T) {
	cat := testCatalog(t)
	base := selection.DefaultConfig()
	tests := []struct {
		name    string
		spec    string
		wantErr error
		check   func(t *testing.T, cat *catalog.Catalog, cfg selection.Config)
	}{
		{
			name: "nested field merges, the rest stays", spec: `{"confidence": {"primary": 0.5}, "gpu_aware": false}`,
			check: func(t *testing.T, _ *catalog.Catalog, cfg selection.Config) {
				want := base
				want.Confidence.Primary = 0.5
				want.GPUAware = false
				if cfg != want {
					t.Fatalf("config = %+v, want %+v", cfg, want)
				}
			},
		},
		{
			name: "weight raised and one removed", spec: `{"weights": {"code": {"MBPP": 3, "HumanEval": 0}}}`,
			check: func(t *testing.T, cat *catalog.Catalog, _ selection.Config) {
				c, _ := cat.Category("code")
				if !reflect.DeepEqual(c.Weights, map[string]float64{"MBPP": 3}) {
					t.Fatalf("code weights = %v", c.Weights)
				}
			},
		},
		{name: "invalid config", spec: `{"tie_epsilon": 2}`, wantErr: ErrApply},
		{name: "unknown category", spec: `{"weights": {"cooking": {"MBPP": 1}}}`, wantErr: catalog.ErrNotFound},
		{name: "undeclared benchmark", spec: `{"weights": {"code": {"Nope": 1}}}`, wantErr: catalog.ErrUnknownBenchmark},
		{name: "last weight removed", spec: `{"weights": {"chat": {"IFEval": 0}}}`, wantErr: ErrApply},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tc.spec))
			if err != nil {
				t.Fatal(err)
			}
			gotCat, gotCfg, err := s.Apply(cat, base)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				tc.check(t, gotCat, gotCfg)
			}
		})
	}
}

func TestTally(t *testing.T) {
	tally := NewTally(2)
	outcomes := []Outcome{
		{EventID: "e1", Category: "code", Recorded: "a", New: "a"},
		{EventID: "e2", Category: "code", Recorded: "a", New: "b", Changed: true},
		{EventID: "e3", Category: "code", Recorded: "a", New: "b", Changed: true},
		{EventID: "e4", Category: "chat", Recorded: "c", New: "d", Changed: true},
		{EventID: "e5", Category: "chat", Recorded: "c", New: "e"}, // a tie, not a change
		{EventID: "e6", Category: "chat", Recorded: "c", Changed: true, Err: &selection.NoCandidateError{TaskCategory: "chat", Models: 1}},
		{EventID: "e7", Category: "chat", Recorded: "c", New: "c", Unplaced: true},
	}
	for _, o := range outcomes {
		tally.Add(o)
	}
	rep := tally.Report()
	want := Report{
		Read: 7, Changed: 4, Failed: 1, Unplaced: 1, ChangedPct: 100 * 4.0 / 7,
		Transitions: []Transition{
			{Category: "code", From: "a", To: "b", Count: 2},
			{Category: "chat", From: "c", To: "", Count: 1},
			{Category: "chat", From: "c", To: "d", Count: 1},
		},
		ChangedEventIDs: []string{"e2", "e3"},
		Errors:          map[string]int{selection.ErrNoCandidate.Error(): 1},
	}
	if !reflect.DeepEqual(rep, want) {
		t.Fatalf("report = %+v\nwant     %+v", rep, want)
	}
}

// TestRescoreTie checks that a different pick within tie_epsilon of the
// best is no change, and that one beyond it is.
func TestRescoreTie(t *testing.T) {
	cat := testCatalog(t)
	cfg := selection.DefaultConfig()
	cfg.GPUAware = false
	rs, err := NewRescorer(cat, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		recorded string
		eps      float64
		changed  bool
	}{
		{"same model", "alpha", 0.01, false},
		{"runner-up far below the best", "beta", 0.01, true},
		{"runner-up within a wide epsilon", "beta", 0.5, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.TieEpsilon = tc.eps
			r, err := NewRescorer(cat, c)
			if err != nil {
				t.Fatal(err)
			}
			ev := &events.SelectionEvent{EventID: "e", Timestamp: ts, TaskCategory: "code", SelectedModel: tc.recorded,
				Request: selection.Request{TaskCategory: "code"}}
			o := r.Rescore(ev)
			if o.Changed != tc.changed || o.Err != nil {
				t.Fatalf("outcome = %+v, want changed %v", o, tc.changed)
			}
			// Outside a wide epsilon the pick is the one best model.
			if tc.eps < 0.1 && o.New != "alpha" {
				t.Fatalf("new model = %q, want alpha", o.New)
			}
		})
	}
	if o := rs.Rescore(&events.SelectionEvent{Timestamp: ts, TaskCategory: "gone", SelectedModel: "alpha",
		Request: selection.Request{TaskCategory: "gone"}}); !o.Changed || !errors.Is(o.Err, selection.ErrUnknownCategory) {
		t.Fatalf("a category that no longer exists: %+v, want a changed decision with ErrUnknownCategory", o)
	}
}

// TestRescoreUnplaced: an event decided without placement records no GPU,
// so a config asking for placement can only re-score it without; that is
// said, unless the event had degraded for want of telemetry anyway.
func TestRescoreUnplaced(t *testing.T) {
	rs, err := NewRescorer(testCatalog(t), selection.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		degraded bool
		want     bool
	}{
		{"decided with gpu_aware switched off", false, true},
		{"degraded at the time", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events.SelectionEvent{Timestamp: ts, TaskCategory: "code", SelectedModel: "alpha", Degraded: tc.degraded,
				Mode: selection.ModeMultiCategory, Request: selection.Request{TaskCategory: "code"}}
			if o := rs.Rescore(ev); o.Unplaced != tc.want || o.Changed {
				t.Fatalf("outcome %+v, want unplaced %v and no change", o, tc.want)
			}
		})
	}
}

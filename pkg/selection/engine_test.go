package selection

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// handCatalog is small enough to work scores out by hand:
//
//	code quality = (HumanEval x 1.0 + MBPP x 0.8) / 1.8 / 100
//	coder-7b   (80, 70): 1.36/1.8 = 0.7556, single category 0.95 -> 0.7178
//	coder-33b  (90, 85): 1.58/1.8 = 0.8778, primary 0.90       -> 0.7900
//	general-8b (60, 60): 1.08/1.8 = 0.6000, secondary 0.70     -> 0.4200
func handCatalog(t testing.TB) *catalog.Catalog {
	t.Helper()
	models := []catalog.Model{
		{ID: "coder-7b", Name: "Coder 7B", ParametersB: 7, Quantization: "q4_k_m", GPUMemoryMB: 6000, ContextLength: 32768,
			OrchestrationCategories: []string{"code"}, Benchmarks: map[string]float64{"HumanEval": 80, "MBPP": 70}, Source: "test"},
		{ID: "coder-33b", Name: "Coder 33B", ParametersB: 33, Quantization: "fp16", GPUMemoryMB: 20000, ContextLength: 16384,
			OrchestrationCategories: []string{"code", "general"}, Benchmarks: map[string]float64{"HumanEval": 90, "MBPP": 85, "MMLU": 60}, Source: "test"},
		{ID: "general-8b", Name: "General 8B", ParametersB: 8, Quantization: "q8_0", GPUMemoryMB: 9000, ContextLength: 131072,
			OrchestrationCategories: []string{"general", "code", "math"},
			Benchmarks:              map[string]float64{"HumanEval": 60, "MBPP": 60, "GSM8K": 80, "MATH": 50, "MMLU": 70, "IFEval": 80}, Source: "test"},
		{ID: "math-7b", Name: "Math 7B", ParametersB: 7, Quantization: "q4_k_m", GPUMemoryMB: 7000, ContextLength: 4096,
			OrchestrationCategories: []string{"math"}, Benchmarks: map[string]float64{"GSM8K": 90, "MATH": 80}, Source: "test"},
	}
	cat, err := catalog.New(testBenchmarks, testCategories, models)
	if err != nil {
		t.Fatalf("hand catalog: %v", err)
	}
	return cat
}

func newTestEngine(t fataler, cat *catalog.Catalog, tweak func(*Config)) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := NewEngine(cat, cfg)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	return e
}

func sample(host string, index int, freeMB int64, util, temp float64) telemetry.Sample {
	return telemetry.Sample{
		Host: host, Index: index, UUID: "GPU-" + host + "-" + string(rune('0'+index)), Name: "NVIDIA A100-SXM4-80GB",
		Timestamp: t0, Source: "simulated", MemoryTotalMB: 81920, MemoryUsedMB: 81920 - freeMB, MemoryFreeMB: freeMB,
		UtilizationGPUPct: util, TemperatureC: temp, PowerW: 250, PowerLimitW: 400, Healthy: true,
	}
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-3 }

func TestSelectModes(t *testing.T) {
	cat := handCatalog(t)
	tests := []struct {
		name      string
		tweak     func(*Config)
		req       Request
		samples   []telemetry.Sample
		wantModel string
		wantGPU   string
		wantMode  Mode
		wantScore float64
		degraded  bool
	}{
		{name: "multi_category picks the best quality x confidence",
			req: Request{TaskCategory: "code", Mode: ModeMultiCategory}, wantModel: "coder-33b", wantMode: ModeMultiCategory, wantScore: 0.79},
		{name: "seed's max_gpu_memory_mb leaves the 7B coder",
			req:       Request{TaskCategory: "code", Mode: ModeMultiCategory, Constraints: Constraints{MaxGPUMemoryMB: 16384}},
			wantModel: "coder-7b", wantMode: ModeMultiCategory, wantScore: 0.7178},
		{name: "benchmark mode ranks primary-category models by quality alone",
			req: Request{TaskCategory: "code", Mode: ModeBenchmark}, wantModel: "coder-33b", wantMode: ModeBenchmark, wantScore: 0.8778},
		{name: "benchmark mode ignores models serving the category as secondary",
			req:       Request{TaskCategory: "code", Mode: ModeBenchmark, Constraints: Constraints{DenyModels: []string{"coder-33b", "coder-7b"}}},
			wantModel: "", wantMode: ModeBenchmark},
		{name: "multi_category switched off downgrades to benchmark",
			tweak: func(c *Config) { c.MultiCategory = false },
			req:   Request{TaskCategory: "code", Mode: ModeMultiCategory}, wantModel: "coder-33b", wantMode: ModeBenchmark, wantScore: 0.8778},
		{name: "gpu_aware switched off downgrades to multi_category",
			tweak: func(c *Config) { c.GPUAware = false },
			req:   Request{TaskCategory: "code"}, samples: []telemetry.Sample{sample("a", 0, 80000, 0, 30)},
			wantModel: "coder-33b", wantMode: ModeMultiCategory, wantScore: 0.79},
		{name: "gpu_aware places on the idle GPU",
			req: Request{TaskCategory: "code"},
			samples: []telemetry.Sample{
				sample("a", 0, 80000, 90, 70), sample("a", 1, 80000, 0, 35),
			},
			// placement on a/1 = (0.5 x 1 + 0.3 x (80000-20000)/81920 + 0.2 x 1) / 1.0 = 0.9197
			wantModel: "coder-33b", wantGPU: "a/1", wantMode: ModeGPUAware, wantScore: 0.79 * 0.9197},
		{name: "gpu_aware skips GPUs without room for the model",
			req: Request{TaskCategory: "code"},
			samples: []telemetry.Sample{
				sample("a", 0, 10000, 0, 30), sample("a", 1, 5000, 0, 30),
			},
			// coder-33b (20000 MB) fits nowhere; coder-7b (6000 MB) only on a/0:
			// placement = 0.5 + 0.3 x 4000/81920 + 0.2 = 0.7146
			wantModel: "coder-7b", wantGPU: "a/0", wantMode: ModeGPUAware, wantScore: 0.7178 * 0.7146},
		{name: "all samples stale: degraded to multi_category",
			req: Request{TaskCategory: "code"},
			samples: func() []telemetry.Sample {
				s := sample("a", 0, 80000, 0, 30)
				s.Timestamp = t0.Add(-time.Minute)
				return []telemetry.Sample{s}
			}(),
			wantModel: "coder-33b", wantMode: ModeMultiCategory, wantScore: 0.79, degraded: true},
		{name: "multi_category off: gpu_aware scores primary models by quality x placement",
			tweak: func(c *Config) { c.MultiCategory = false },
			req:   Request{TaskCategory: "code"}, samples: []telemetry.Sample{sample("a", 1, 80000, 0, 35)},
			wantModel: "coder-33b", wantGPU: "a/1", wantMode: ModeGPUAware, wantScore: 0.8778 * 0.9197},
		{name: "multi_category off: gpu_aware leaves out models serving the category as secondary",
			tweak:   func(c *Config) { c.MultiCategory = false },
			req:     Request{TaskCategory: "code", Constraints: Constraints{DenyModels: []string{"coder-33b", "coder-7b"}}},
			samples: []telemetry.Sample{sample("a", 1, 80000, 0, 35)}, wantModel: "", wantMode: ModeGPUAware},
		{name: "multi_category off and no fresh telemetry: degraded to benchmark",
			tweak: func(c *Config) { c.MultiCategory = false },
			req:   Request{TaskCategory: "code"}, wantModel: "coder-33b", wantMode: ModeBenchmark, wantScore: 0.8778, degraded: true},
		{name: "a failed utilisation read is no idle GPU",
			req: Request{TaskCategory: "code"},
			samples: []telemetry.Sample{
				func() telemetry.Sample { // reads 0% because the read failed
					s := sample("a", 0, 80000, 0, 35)
					s.FailedReads = []string{telemetry.ReadUtilization}
					return s
				}(),
				sample("a", 1, 80000, 20, 35),
			},
			// a/1: (0.5 x 0.8 + 0.3 x 60000/81920 + 0.2 x 1) = 0.8197; a/0 scores its
			// utilisation 0.5: 0.25 + 0.2197 + 0.2 = 0.6697
			wantModel: "coder-33b", wantGPU: "a/1", wantMode: ModeGPUAware, wantScore: 0.79 * 0.8197},
		{name: "a failed temperature read meets no max_temperature_c",
			req: Request{TaskCategory: "code", Constraints: Constraints{MaxTemperatureC: 60}},
			samples: []telemetry.Sample{func() telemetry.Sample {
				s := sample("a", 0, 80000, 0, 0)
				s.FailedReads = []string{telemetry.ReadTemperature}
				return s
			}()},
			wantModel: "", wantMode: ModeGPUAware},
		{name: "no telemetry at all: degraded",
			req: Request{TaskCategory: "code"}, wantModel: "coder-33b", wantMode: ModeMultiCategory, wantScore: 0.79, degraded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, cat, tt.tweak)
			res, err := e.Select(Query{Request: tt.req, Now: t0}, e.NewFleet(tt.samples, nil))
			if tt.wantModel == "" {
				if !errors.Is(err, ErrNoCandidate) {
					t.Fatalf("err = %v, want ErrNoCandidate", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			if res.Model.ID != tt.wantModel {
				t.Errorf("model = %s, want %s (reason: %s)", res.Model.ID, tt.wantModel, res.Reason)
			}
			gotGPU := ""
			if res.GPU != nil {
				gotGPU = res.GPU.Key
			}
			if gotGPU != tt.wantGPU {
				t.Errorf("gpu = %q, want %q", gotGPU, tt.wantGPU)
			}
			if res.Mode != tt.wantMode || res.Degraded != tt.degraded {
				t.Errorf("mode = %s degraded = %v, want %s %v", res.Mode, res.Degraded, tt.wantMode, tt.degraded)
			}
			if !approx(res.FinalScore, tt.wantScore) {
				t.Errorf("final score = %.4f, want %.4f", res.FinalScore, tt.wantScore)
			}
			if tt.degraded && !strings.HasPrefix(res.Reason, "degraded") {
				t.Errorf("reason %q does not say degraded", res.Reason)
			}
		})
	}
}

func TestSelectExplainsItself(t *testing.T) {
	e := newTestEngine(t, handCatalog(t), nil)
	f := e.NewFleet([]telemetry.Sample{sample("a", 0, 80000, 10, 45), sample("b", 0, 70000, 20, 50)}, nil)
	res, err := e.Select(Query{Request: Request{TaskCategory: "code"}, Now: t0.Add(2 * time.Second)}, f)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Scores
	if got := s.Quality * s.Confidence * s.Placement; !approx(got, res.FinalScore) {
		t.Errorf("final %.4f != quality x confidence x placement %.4f", res.FinalScore, got)
	}
	if res.TelemetryAgeMs != 2000 {
		t.Errorf("telemetry age = %v ms, want 2000", res.TelemetryAgeMs)
	}
	if len(res.Alternatives) != 2 || res.Alternatives[0].ModelID != "coder-7b" || res.Alternatives[1].ModelID != "general-8b" {
		t.Errorf("alternatives = %+v, want coder-7b then general-8b", res.Alternatives)
	}
	for _, want := range []string{"coder-33b on a/0", "quality 0.878", "confidence 0.90 (primary category)", "placement"} {
		if !strings.Contains(res.Reason, want) {
			t.Errorf("reason %q lacks %q", res.Reason, want)
		}
	}
	rep := res.Reply(&Request{TaskCategory: "code", RequestID: "r1"}, "ev1", t0, time.Microsecond)
	if rep.GPU == nil || rep.GPU.Host != "a" || rep.ModelID != "coder-33b" || rep.RequestID != "r1" || rep.SelectionDurationUs != 1 {
		t.Errorf("reply = %+v", rep)
	}
}

func TestSelectErrors(t *testing.T) {
	e := newTestEngine(t, handCatalog(t), nil)
	hot := sample("a", 0, 80000, 0, 90)
	lost := sample("a", 1, 80000, 0, 30)
	lost.Healthy = false
	fleet := e.NewFleet([]telemetry.Sample{hot, lost, sample("a", 2, 1000, 0, 30)}, nil)
	tests := []struct {
		name    string
		req     Request
		fleet   *Fleet
		want    error
		wantMsg []string
	}{
		{"empty category", Request{}, nil, ErrInvalidRequest, []string{"task_category is empty"}},
		{"bad mode and limits", Request{TaskCategory: "code", Mode: "fastest", Constraints: Constraints{MinScore: 2, MaxGPUMemoryMB: -1}}, nil,
			ErrInvalidRequest, []string{`mode "fastest"`, "min_score 2", "max_gpu_memory_mb -1"}},
		{"NaN is refused", Request{TaskCategory: "code", Constraints: Constraints{MaxUtilizationPct: math.NaN()}}, nil, ErrInvalidRequest, []string{"max_utilization_pct"}},
		{"unknown category", Request{TaskCategory: "poetry"}, nil, ErrUnknownCategory, []string{`"poetry"`, "code, general, math"}},
		{"allow list names an unknown model", Request{TaskCategory: "code", Constraints: Constraints{AllowModels: []string{"coder-7b", "coder-8b"}}}, nil,
			ErrUnknownModel, []string{`"coder-8b"`}},
		{"impossible memory limit", Request{TaskCategory: "code", Mode: ModeMultiCategory, Constraints: Constraints{MaxGPUMemoryMB: 100}}, nil,
			ErrNoCandidate, []string{"3 models", "max_gpu_memory_mb: 3"}},
		{"every GPU filtered", Request{TaskCategory: "code"}, fleet,
			ErrNoCandidate, []string{"3 GPUs", "temperature: 1", "unhealthy: 1", "lacked free memory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Select(Query{Request: tt.req, Now: t0}, tt.fleet)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q lacks %q", err, m)
				}
			}
		})
	}
	t.Run("fleet of another config", func(t *testing.T) {
		other := newTestEngine(t, handCatalog(t), func(c *Config) { c.Placement.Utilization = 0.9 })
		_, err := e.Select(Query{Request: Request{TaskCategory: "code"}, Now: t0}, other.NewFleet([]telemetry.Sample{sample("a", 0, 80000, 0, 30)}, nil))
		if !errors.Is(err, ErrFleetMismatch) {
			t.Fatalf("err = %v, want ErrFleetMismatch", err)
		}
	})
}

func TestNearTiesAreDeterministicPerSeedAndSpread(t *testing.T) {
	e := newTestEngine(t, handCatalog(t), nil)
	var samples []telemetry.Sample
	for i := range 8 {
		samples = append(samples, sample("h", i, 80000, 0, 30)) // identical GPUs: exact ties
	}
	f := e.NewFleet(samples, nil)
	seen := map[string]bool{}
	for seed := range uint64(64) {
		q := Query{Request: Request{TaskCategory: "code"}, Now: t0, Seed: seed}
		a, err := e.Select(q, f)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := e.Select(q, f)
		if a.GPU.Key != b.GPU.Key {
			t.Fatalf("seed %d gave %s then %s", seed, a.GPU.Key, b.GPU.Key)
		}
		if a.Ties != 8 {
			t.Fatalf("ties = %d, want 8", a.Ties)
		}
		seen[a.GPU.Key] = true
	}
	if len(seen) < 6 {
		t.Errorf("64 seeds chose only %d of 8 tied GPUs: %v", len(seen), seen)
	}
}

func TestReservationsSpreadABurst(t *testing.T) {
	e := newTestEngine(t, handCatalog(t), func(c *Config) { c.TieEpsilon = 0 })
	ledger := NewLedger()
	// a/0 is slightly better but, once it holds a coder-33b, has room for a
	// coder-7b only; a/1 has room for one coder-33b.
	f := e.NewFleet([]telemetry.Sample{sample("a", 0, 26000, 0, 30), sample("a", 1, 24000, 5, 30)}, ledger)
	var got []string
	for i := range 3 {
		res, err := e.Select(Query{Request: Request{TaskCategory: "code"}, Now: t0}, f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Model.ID+"@"+res.GPU.Key)
		ledger.Reserve(Reservation{ID: string(rune('a' + i)), GPUKey: res.GPU.Key, MemoryMB: res.Model.GPUMemoryMB, At: t0, Expires: t0.Add(time.Minute)})
	}
	want := []string{"coder-33b@a/0", "coder-33b@a/1", "coder-7b@a/0"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("burst placed %v, want %v", got, want)
	}
}

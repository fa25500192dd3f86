package selection

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/schemas"
)

func TestQualityScorer(t *testing.T) {
	code := &catalog.Category{Name: "code", Weights: map[string]float64{"HumanEval": 1.0, "MBPP": 0.8}}
	tests := []struct {
		name  string
		bench map[string]float64
		want  float64
	}{
		{"both benchmarks", map[string]float64{"HumanEval": 80, "MBPP": 70}, (0.8 + 0.56) / 1.8},
		{"perfect", map[string]float64{"HumanEval": 100, "MBPP": 100}, 1},
		{"missing MBPP loses its weight", map[string]float64{"HumanEval": 80}, 0.8 / 1.8},
		{"missing everything", map[string]float64{"MMLU": 90}, 0},
		{"unweighted benchmarks do not count", map[string]float64{"HumanEval": 80, "MBPP": 70, "MMLU": 100}, (0.8 + 0.56) / 1.8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := QualityScorer{}.ScoreModel(code, &catalog.Model{Benchmarks: tt.bench})
			if !approx(got, tt.want) {
				t.Errorf("quality = %.4f, want %.4f", got, tt.want)
			}
		})
	}
	t.Run("missing benchmark never raises the score", func(t *testing.T) {
		full := QualityScorer{}.ScoreModel(code, &catalog.Model{Benchmarks: map[string]float64{"HumanEval": 50, "MBPP": 1}})
		part := QualityScorer{}.ScoreModel(code, &catalog.Model{Benchmarks: map[string]float64{"HumanEval": 50}})
		if part > full {
			t.Errorf("dropping MBPP raised quality from %.4f to %.4f", full, part)
		}
	})
}

func TestConfidenceScorer(t *testing.T) {
	s := ConfidenceScorer{Values: DefaultConfig().Confidence}
	tests := []struct {
		name     string
		model    catalog.Model
		category string
		want     float64
		kind     confidenceKind
	}{
		{"single category", catalog.Model{OrchestrationCategories: []string{"code"}}, "code", 0.95, confidenceSingle},
		{"primary", catalog.Model{OrchestrationCategories: []string{"code", "math"}}, "code", 0.9, confidencePrimary},
		{"secondary", catalog.Model{OrchestrationCategories: []string{"code", "math"}}, "math", 0.7, confidenceSecondary},
		{"override", catalog.Model{OrchestrationCategories: []string{"code", "math"}, Confidence: map[string]float64{"math": 0.85}}, "math", 0.85, confidenceOverride},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.ScoreModel(&catalog.Category{Name: tt.category}, &tt.model)
			_, kind := s.classify(tt.category, &tt.model)
			if got != tt.want || kind != tt.kind {
				t.Errorf("confidence = %v (%s), want %v (%s)", got, kind, tt.want, tt.kind)
			}
		})
	}
}

func TestPlacementScorers(t *testing.T) {
	g := &GPU{Sample: sample("a", 0, 40960, 25, 62.5)}
	tests := []struct {
		name   string
		scorer PlacementScorer
		free   int64
		need   int64
		want   float64
	}{
		{"utilization 25%", UtilizationScorer{}, 40960, 0, 0.75},
		{"headroom half free, nothing placed", HeadroomScorer{}, 40960, 0, 0.5},
		{"headroom after a 20480 MB model", HeadroomScorer{}, 40960, 20480, 0.25},
		{"headroom never below 0", HeadroomScorer{}, 1000, 20480, 0},
		{"temperature halfway from 40 to 85", TemperatureScorer{Ideal: 40, Max: 85}, 0, 0, 0.5},
		{"temperature below ideal", TemperatureScorer{Ideal: 70, Max: 85}, 0, 0, 1},
		{"temperature at max", TemperatureScorer{Ideal: 40, Max: 62.5}, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.scorer.ScorePlacement(g, tt.free, tt.need); !approx(got, tt.want) {
				t.Errorf("%s = %.4f, want %.4f", tt.scorer.Name(), got, tt.want)
			}
		})
	}
	t.Run("NaN readings score 0", func(t *testing.T) {
		bad := &GPU{Sample: sample("a", 0, 1, math.NaN(), math.NaN())}
		if u, tm := (UtilizationScorer{}).ScorePlacement(bad, 0, 0), (TemperatureScorer{Ideal: 40, Max: 85}).ScorePlacement(bad, 0, 0); u != 0 || tm != 0 {
			t.Errorf("NaN scored utilization %v, temperature %v", u, tm)
		}
	})
}

func TestModelFilters(t *testing.T) {
	m := &catalog.Model{ID: "m1", Quantization: "q4_k_m", GPUMemoryMB: 8000, ContextLength: 32768}
	tests := []struct {
		filter  ModelFilter
		c       Constraints
		quality float64
		active  bool
		allow   bool
	}{
		{MaxMemoryFilter{}, Constraints{}, 0, false, true},
		{MaxMemoryFilter{}, Constraints{MaxGPUMemoryMB: 8000}, 0, true, true},
		{MaxMemoryFilter{}, Constraints{MaxGPUMemoryMB: 7999}, 0, true, false},
		{AllowModelsFilter{}, Constraints{AllowModels: []string{"m2", "m1"}}, 0, true, true},
		{AllowModelsFilter{}, Constraints{AllowModels: []string{"m2"}}, 0, true, false},
		{DenyModelsFilter{}, Constraints{DenyModels: []string{"m1"}}, 0, true, false},
		{DenyModelsFilter{}, Constraints{DenyModels: []string{"m2"}}, 0, true, true},
		{MinContextFilter{}, Constraints{MinContextLength: 32768}, 0, true, true},
		{MinContextFilter{}, Constraints{MinContextLength: 65536}, 0, true, false},
		{QuantizationFilter{}, Constraints{Quantizations: []string{"fp16"}}, 0, true, false},
		{QuantizationFilter{}, Constraints{Quantizations: []string{"fp16", "q4_k_m"}}, 0, true, true},
		{MinScoreFilter{}, Constraints{MinScore: 0.6}, 0.59, true, false},
		{MinScoreFilter{}, Constraints{MinScore: 0.6}, 0.6, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.filter.Name(), func(t *testing.T) {
			q := &Query{Request: Request{Constraints: tt.c}}
			if got := tt.filter.Active(q); got != tt.active {
				t.Errorf("Active = %v, want %v", got, tt.active)
			}
			if got := tt.filter.AllowModel(q, m, tt.quality); tt.active && got != tt.allow {
				t.Errorf("AllowModel = %v, want %v", got, tt.allow)
			}
		})
	}
}

func TestGPUFilters(t *testing.T) {
	g := &GPU{Sample: sample("h1", 0, 40000, 60, 70)}
	g.staleAtNanos = t0.Add(15 * time.Second).UnixNano()
	unhealthy := &GPU{Sample: sample("h1", 1, 40000, 0, 30)}
	unhealthy.Sample.Healthy = false
	tests := []struct {
		name   string
		filter GPUFilter
		gpu    *GPU
		c      Constraints
		now    time.Time
		allow  bool
	}{
		{"fresh", FreshFilter{}, g, Constraints{}, t0.Add(15 * time.Second), true},
		{"stale", FreshFilter{}, g, Constraints{}, t0.Add(16 * time.Second), false},
		{"healthy", HealthyFilter{}, g, Constraints{}, t0, true},
		{"unhealthy", HealthyFilter{}, unhealthy, Constraints{}, t0, false},
		{"below config max temperature", TemperatureFilter{}, g, Constraints{}, t0, true},
		{"above request max temperature", TemperatureFilter{}, g, Constraints{MaxTemperatureC: 65}, t0, false},
		{"utilization at limit", UtilizationFilter{}, g, Constraints{MaxUtilizationPct: 60}, t0, true},
		{"utilization over limit", UtilizationFilter{}, g, Constraints{MaxUtilizationPct: 50}, t0, false},
		{"host listed", HostFilter{}, g, Constraints{Hosts: []string{"h0", "h1"}}, t0, true},
		{"host not listed", HostFilter{}, g, Constraints{Hosts: []string{"h0"}}, t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &Query{Request: Request{Constraints: tt.c}, nowNanos: tt.now.UnixNano(), maxTemperatureC: 85}
			if !tt.filter.Active(q) {
				t.Fatalf("%s inactive", tt.filter.Name())
			}
			if got := tt.filter.AllowGPU(q, tt.gpu); got != tt.allow {
				t.Errorf("AllowGPU = %v, want %v", got, tt.allow)
			}
		})
	}
	t.Run("config max temperature is a hard limit", func(t *testing.T) {
		q := &Query{maxTemperatureC: 70}
		if (TemperatureFilter{}).AllowGPU(q, g) {
			t.Error("a GPU at the configured maximum was admitted")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		tweak func(*Config)
		field string
	}{
		{"default is valid", func(*Config) {}, ""},
		{"bad mode", func(c *Config) { c.DefaultMode = "fast" }, "default_mode"},
		{"confidence above 1", func(c *Config) { c.Confidence.Primary = 1.2 }, "confidence.primary"},
		{"confidence zero", func(c *Config) { c.Confidence.Secondary = 0 }, "confidence.secondary"},
		{"negative weight", func(c *Config) { c.Placement.Headroom = -1 }, "placement"},
		{"all weights zero", func(c *Config) { c.Placement = PlacementWeights{} }, "placement"},
		{"stale_after zero", func(c *Config) { c.StaleAfterMs = 0 }, "stale_after_ms"},
		{"max below ideal temperature", func(c *Config) { c.MaxTemperatureC = 30 }, "max_temperature_c"},
		{"tie epsilon 1", func(c *Config) { c.TieEpsilon = 1 }, "tie_epsilon"},
		{"too many alternatives", func(c *Config) { c.Alternatives = 11 }, "alternatives"},
		{"stale_after overflowing a duration", func(c *Config) { c.StaleAfterMs = 1e13 }, "stale_after_ms"},
		{"reservation ttl above a day", func(c *Config) { c.ReservationTTLMs = MaxDurationMs + 1 }, "reservation_ttl_ms"},
		{"huge placement weight", func(c *Config) { c.Placement.Headroom = 1e308 }, "placement"},
		{"NaN placement weight", func(c *Config) { c.Placement.Utilization = math.NaN() }, "placement"},
		{"NaN confidence", func(c *Config) { c.Confidence.Primary = math.NaN() }, "confidence.primary"},
		{"temperature above the bound", func(c *Config) { c.MaxTemperatureC = 1000 }, "max_temperature_c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.tweak(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("err = %v, want ErrInvalidConfig naming %s", err, tt.field)
			}
		})
	}
	t.Run("every problem at once", func(t *testing.T) {
		c := DefaultConfig()
		c.DefaultMode, c.StaleAfterMs, c.Alternatives = "x", -1, -1
		err := c.Validate()
		for _, f := range []string{"default_mode", "stale_after_ms", "alternatives"} {
			if !strings.Contains(err.Error(), f) {
				t.Errorf("%v lacks %s", err, f)
			}
		}
	})
}

func TestParseConfig(t *testing.T) {
	valid, err := json.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(from, to string) []byte {
		t.Helper()
		if !strings.Contains(string(valid), from) {
			t.Fatalf("default config lacks %s", from)
		}
		return []byte(strings.Replace(string(valid), from, to, 1))
	}
	tests := []struct {
		name   string
		data   []byte
		schema bool  // a schema violation (*schemas.ValidationError)
		rule   error // else a sentinel, nil for a valid config
		names  string
	}{
		{"the default", valid, false, nil, ""},
		{"unknown key", []byte(`{"gpu_awre": false}`), true, nil, "gpu_awre"},
		{"missing fields", []byte(`{"gpu_aware": false}`), true, nil, "required"},
		{"above the schema's maximum", edit(`"stale_after_ms":15000`, `"stale_after_ms":10000000000000`), true, nil, "stale_after_ms"},
		{"cross-field rule", edit(`"max_temperature_c":85`, `"max_temperature_c":30`), false, ErrInvalidConfig, "max_temperature_c"},
		{"not JSON", []byte(`{"default_mode":`), false, nil, "selection config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(tt.data)
			if tt.names == "" {
				if err != nil || cfg != DefaultConfig() {
					t.Fatalf("ParseConfig = %+v, %v", cfg, err)
				}
				return
			}
			var sv *schemas.ValidationError
			if err == nil || errors.As(err, &sv) != tt.schema || (tt.rule != nil && !errors.Is(err, tt.rule)) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want schema violation %v / %v naming %s", err, tt.schema, tt.rule, tt.names)
			}
		})
	}
}

func TestLedger(t *testing.T) {
	l := NewLedger()
	r := Reservation{ID: "e1", GPUKey: "a/0", MemoryMB: 1000, At: t0, Expires: t0.Add(10 * time.Second)}
	if !l.Reserve(r) || l.Reserve(r) {
		t.Fatal("Reserve is not idempotent by id")
	}
	l.Reserve(Reservation{ID: "e2", GPUKey: "a/0", MemoryMB: 500, At: t0.Add(2 * time.Second), Expires: t0.Add(20 * time.Second)})
	steps := []struct {
		name string
		do   func()
		at   time.Time
		want int64
	}{
		{"both held", func() {}, t0.Add(time.Second), 1500},
		{"first expired", func() {}, t0.Add(10 * time.Second), 500},
		{"newer sample clears older reservations", func() { l.Observe("a/0", t0.Add(3*time.Second)) }, t0.Add(11 * time.Second), 0},
		{"unknown GPU has none", func() {}, t0, 0},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			key := "a/0"
			if i == 3 {
				key = "b/9"
			}
			if got := l.ReservedMB(key, s.at); got != s.want {
				t.Errorf("reserved = %d, want %d", got, s.want)
			}
		})
	}
}

package selection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nlocalmodels/orchestrator/schemas"
)

// Config is the selection config stored under key "selection" in orch_config.
// It is live-reloaded: its switches are the seed's rollback plan.
type Config struct {
	// DefaultMode applies when a request names none.
	DefaultMode Mode `json:"default_mode"`
	// BenchmarkScoring, MultiCategory and GPUAware are the seed's
	// enableBenchmarkScoring / buildMultiCategoryRegistry / enableGPUMonitoring.
	// Off, benchmark scoring makes every quality 1; multi_category and gpu_aware
	// requests are downgraded one step while their switch is off.
	BenchmarkScoring bool             `json:"benchmark_scoring"`
	MultiCategory    bool             `json:"multi_category"`
	GPUAware         bool             `json:"gpu_aware"`
	Confidence       ConfidenceConfig `json:"confidence"`
	Placement        PlacementWeights `json:"placement"`
	// StaleAfterMs: a sample older than this is stale (default 3 x the 5 s interval).
	StaleAfterMs int64 `json:"stale_after_ms"`
	// MaxTemperatureC: GPUs at or above it are not placed on.
	MaxTemperatureC float64 `json:"max_temperature_c"`
	// IdealTemperatureC: temperatures at or below it score 1.
	IdealTemperatureC float64 `json:"ideal_temperature_c"`
	// ReservationTTLMs bounds how long a placement reserves memory on a GPU
	// when no newer sample of that GPU arrives.
	ReservationTTLMs int64 `json:"reservation_ttl_ms"`
	// TieEpsilon: candidates within this of the best final score are near-ties,
	// one of which is picked at random.
	TieEpsilon float64 `json:"tie_epsilon"`
	// Alternatives is how many runners-up a reply lists.
	Alternatives int `json:"alternatives"`
}

// ConfidenceConfig holds the seed's multi-category confidence values.
type ConfidenceConfig struct {
	SingleCategory float64 `json:"single_category"`
	Primary        float64 `json:"primary"`
	Secondary      float64 `json:"secondary"`
}

// PlacementWeights weigh the three placement scorers; they need not sum to 1.
type PlacementWeights struct {
	Utilization float64 `json:"utilization"`
	Headroom    float64 `json:"headroom"`
	Temperature float64 `json:"temperature"`
}

// DefaultConfig returns the seed's defaults: every feature on, gpu_aware,
// confidence 0.95 / 0.9 / 0.7, stale after 3 x 5 s.
func DefaultConfig() Config {
	return Config{
		DefaultMode:       ModeGPUAware,
		BenchmarkScoring:  true,
		MultiCategory:     true,
		GPUAware:          true,
		Confidence:        ConfidenceConfig{SingleCategory: 0.95, Primary: 0.9, Secondary: 0.7},
		Placement:         PlacementWeights{Utilization: 0.5, Headroom: 0.3, Temperature: 0.2},
		StaleAfterMs:      15000,
		MaxTemperatureC:   85,
		IdealTemperatureC: 40,
		ReservationTTLMs:  30000,
		TieEpsilon:        0.01,
		Alternatives:      3,
	}
}

// StaleAfter is StaleAfterMs as a duration.
func (c Config) StaleAfter() time.Duration { return time.Duration(c.StaleAfterMs) * time.Millisecond }

// ReservationTTL is ReservationTTLMs as a duration.
func (c Config) ReservationTTL() time.Duration {
	return time.Duration(c.ReservationTTLMs) * time.Millisecond
}

// Upper bounds of the config's fields (selection-config.schema.json has the
// same): durations fit time.Duration with room to spare, and weights stay
// far from overflowing their sum.
const (
	// MaxAlternatives caps Config.Alternatives so a reply stays small.
	MaxAlternatives = 10
	// MaxDurationMs bounds stale_after_ms and reservation_ttl_ms (one day).
	MaxDurationMs = 24 * 60 * 60 * 1000
	// MaxPlacementWeight bounds each placement weight.
	MaxPlacementWeight = 1000
	// MaxTemperatureBoundC bounds max_temperature_c and ideal_temperature_c.
	MaxTemperatureBoundC = 200
)

// ParseConfig reads a stored or submitted selection config: its schema
// first (an error wrapping *schemas.ValidationError lists every violation;
// unknown and missing fields included), then Validate's cross-field rules
// (errors wrapping ErrInvalidConfig).
func ParseConfig(data []byte) (Config, error) {
	doc, err := schemas.Decode(data)
	if err != nil {
		return Config{}, fmt.Errorf("selection config: %w", err)
	}
	if err := schemas.ValidateValue(schemas.SelectionConfig, doc); err != nil {
		return Config{}, fmt.Errorf("selection config: %w", err)
	}
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil { // the schema admitted it: e.g. 7.0 for an integer
		return Config{}, fmt.Errorf("selection config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate returns every problem with the config, joined, each wrapping ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if !c.DefaultMode.Valid() {
		bad("default_mode", "%q is not benchmark, multi_category or gpu_aware", c.DefaultMode)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"confidence.single_category", c.Confidence.SingleCategory},
		{"confidence.primary", c.Confidence.Primary},
		{"confidence.secondary", c.Confidence.Secondary},
	} {
		if !(f.v > 0 && f.v <= 1) { // NaN too
			bad(f.name, "%v is outside (0,1]", f.v)
		}
	}
	p := c.Placement
	if !inRange(p.Utilization, 0, MaxPlacementWeight) || !inRange(p.Headroom, 0, MaxPlacementWeight) || !inRange(p.Temperature, 0, MaxPlacementWeight) {
		bad("placement", "weights must be within [0,%d] (got %v, %v, %v)", MaxPlacementWeight, p.Utilization, p.Headroom, p.Temperature)
	} else if p.Utilization+p.Headroom+p.Temperature <= 0 {
		bad("placement", "at least one weight must be positive")
	}
	if c.StaleAfterMs <= 0 || c.StaleAfterMs > MaxDurationMs {
		bad("stale_after_ms", "%d is outside 1..%d", c.StaleAfterMs, MaxDurationMs)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"max_temperature_c", c.MaxTemperatureC},
		{"ideal_temperature_c", c.IdealTemperatureC},
	} {
		if !inRange(f.v, 0, MaxTemperatureBoundC) {
			bad(f.name, "%v is outside [0,%d]", f.v, MaxTemperatureBoundC)
		}
	}
	if c.MaxTemperatureC <= c.IdealTemperatureC {
		bad("max_temperature_c", "%v must be above ideal_temperature_c %v", c.MaxTemperatureC, c.IdealTemperatureC)
	}
	if c.ReservationTTLMs < 0 || c.ReservationTTLMs > MaxDurationMs {
		bad("reservation_ttl_ms", "%d is outside 0..%d", c.ReservationTTLMs, MaxDurationMs)
	}
	if !(c.TieEpsilon >= 0 && c.TieEpsilon < 1) {
		bad("tie_epsilon", "%v is outside [0,1)", c.TieEpsilon)
	}
	if c.Alternatives < 0 || c.Alternatives > MaxAlternatives {
		bad("alternatives", "%d is outside 0..%d", c.Alternatives, MaxAlternatives)
	}
	return errors.Join(errs...)
}

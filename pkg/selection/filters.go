package selection

import (
	"slices"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

// Filters are hard rules. Each is its own small type; an engine only runs the
// filters that are Active for a request, so an unset constraint costs nothing.
// Filters are zero-size values reading the query, so holding them in an
// interface does not allocate.

// ModelFilter admits or rejects a model (before any GPU is considered).
type ModelFilter interface {
	Name() string
	Active(q *Query) bool
	AllowModel(q *Query, m *catalog.Model, quality float64) bool
}

// GPUFilter admits or rejects a GPU, whatever the model.
type GPUFilter interface {
	Name() string
	Active(q *Query) bool
	AllowGPU(q *Query, g *GPU) bool
}

// The model filters, in the order they run. Enabled-and-serves-the-category
// is applied when the engine compiles a category, not per request.
var modelFilters = []ModelFilter{
	MaxMemoryFilter{}, AllowModelsFilter{}, DenyModelsFilter{},
	MinContextFilter{}, QuantizationFilter{}, MinScoreFilter{},
}

// The GPU filters, in the order they run (cheapest and most selective first).
var gpuFilters = []GPUFilter{
	FreshFilter{}, HealthyFilter{}, TemperatureFilter{}, UtilizationFilter{}, HostFilter{},
}

// MaxMemoryFilter is the seed's max_gpu_memory_mb.
type MaxMemoryFilter struct{}

func (MaxMemoryFilter) Name() string         { return "max_gpu_memory_mb" }
func (MaxMemoryFilter) Active(q *Query) bool { return q.Request.Constraints.MaxGPUMemoryMB > 0 }
func (MaxMemoryFilter) AllowModel(q *Query, m *catalog.Model, _ float64) bool {
	return m.GPUMemoryMB <= q.Request.Constraints.MaxGPUMemoryMB
}

// AllowModelsFilter keeps only the listed model ids.
type AllowModelsFilter struct{}

func (AllowModelsFilter) Name() string         { return "allow_models" }
func (AllowModelsFilter) Active(q *Query) bool { return len(q.Request.Constraints.AllowModels) > 0 }
func (AllowModelsFilter) AllowModel(q *Query, m *catalog.Model, _ float64) bool {
	return slices.Contains(q.Request.Constraints.AllowModels, m.ID)
}

// DenyModelsFilter drops the listed model ids.
type DenyModelsFilter struct{}

func (DenyModelsFilter) Name() string         { return "deny_models" }
func (DenyModelsFilter) Active(q *Query) bool { return len(q.Request.Constraints.DenyModels) > 0 }
func (DenyModelsFilter) AllowModel(q *Query, m *catalog.Model, _ float64) bool {
	return !slices.Contains(q.Request.Constraints.DenyModels, m.ID)
}

// MinContextFilter needs a context window of at least min_context_length tokens.
type MinContextFilter struct{}

func (MinContextFilter) Name() string         { return "min_context_length" }
func (MinContextFilter) Active(q *Query) bool { return q.Request.Constraints.MinContextLength > 0 }
func (MinContextFilter) AllowModel(q *Query, m *catalog.Model, _ float64) bool {
	return m.ContextLength >= q.Request.Constraints.MinContextLength
}

// QuantizationFilter keeps only the listed quantizations.
type QuantizationFilter struct{}

func (QuantizationFilter) Name() string { return "quantizations" }
func (QuantizationFilter) Active(q *Query) bool {
	return len(q.Request.Constraints.Quantizations) > 0
}
func (QuantizationFilter) AllowModel(q *Query, m *catalog.Model, _ float64) bool {
	return slices.Contains(q.Request.Constraints.Quantizations, m.Quantization)
}

// MinScoreFilter needs a category quality of at least min_score.
type MinScoreFilter struct{}

func (MinScoreFilter) Name() string         { return "min_score" }
func (MinScoreFilter) Active(q *Query) bool { return q.Request.Constraints.MinScore > 0 }
func (MinScoreFilter) AllowModel(q *Query, _ *catalog.Model, quality float64) bool {
	return quality >= q.Request.Constraints.MinScore
}

// FreshFilter drops GPUs whose latest sample is older than stale_after.
type FreshFilter struct{}

func (FreshFilter) Name() string                   { return "stale" }
func (FreshFilter) Active(*Query) bool             { return true }
func (FreshFilter) AllowGPU(q *Query, g *GPU) bool { return q.nowNanos <= g.staleAtNanos }

// HealthyFilter drops GPUs the agent marked unhealthy (Xid errors, lost GPU).
type HealthyFilter struct{}

func (HealthyFilter) Name() string                   { return "unhealthy" }
func (HealthyFilter) Active(*Query) bool             { return true }
func (HealthyFilter) AllowGPU(_ *Query, g *GPU) bool { return g.Sample.Healthy }

// TemperatureFilter drops GPUs at or above the configured maximum temperature,
// or above the request's max_temperature_c when that is lower. A GPU whose
// temperature read failed passes the configured limit (a sensor some GPUs
// lack must not bar them) but not a limit the request asked for.
type TemperatureFilter struct{}

func (TemperatureFilter) Name() string       { return "temperature" }
func (TemperatureFilter) Active(*Query) bool { return true }
func (TemperatureFilter) AllowGPU(q *Query, g *GPU) bool {
	if g.temperatureUnknown {
		return q.Request.Constraints.MaxTemperatureC <= 0
	}
	t := g.Sample.TemperatureC
	if t >= q.maxTemperatureC {
		return false
	}
	limit := q.Request.Constraints.MaxTemperatureC
	return limit <= 0 || t <= limit
}

// UtilizationFilter drops GPUs busier than max_utilization_pct, and those
// whose utilisation read failed (the limit cannot be shown to hold).
type UtilizationFilter struct{}

func (UtilizationFilter) Name() string { return "max_utilization_pct" }
func (UtilizationFilter) Active(q *Query) bool {
	return q.Request.Constraints.MaxUtilizationPct > 0
}
func (UtilizationFilter) AllowGPU(q *Query, g *GPU) bool {
	return !g.utilizationUnknown && g.Sample.UtilizationGPUPct <= q.Request.Constraints.MaxUtilizationPct
}

// HostFilter keeps only GPUs on the listed hosts.
type HostFilter struct{}

func (HostFilter) Name() string         { return "hosts" }
func (HostFilter) Active(q *Query) bool { return len(q.Request.Constraints.Hosts) > 0 }
func (HostFilter) AllowGPU(q *Query, g *GPU) bool {
	return slices.Contains(q.Request.Constraints.Hosts, g.Sample.Host)
}

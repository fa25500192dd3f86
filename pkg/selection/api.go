package selection

import "time"

// Mode names one of the seed's three selection methods.
type Mode string

const (
	// ModeBenchmark is the seed's selectModel: models whose primary category is
	// the one asked, ranked by benchmark quality alone.
	ModeBenchmark Mode = "benchmark"
	// ModeMultiCategory is selectModelMultiCategory: any model listing the
	// category, ranked by quality x confidence.
	ModeMultiCategory Mode = "multi_category"
	// ModeGPUAware is selectModelGPUAware: multi_category plus a GPU, ranked by
	// quality x confidence x placement.
	ModeGPUAware Mode = "gpu_aware"
)

// Valid reports whether m is one of the three modes.
func (m Mode) Valid() bool {
	return m == ModeBenchmark || m == ModeMultiCategory || m == ModeGPUAware
}

// Request is the selection-request message nFlow sends to orch.select.
type Request struct {
	// RequestID is the caller's id, echoed in the reply and the event.
	RequestID    string `json:"request_id,omitempty"`
	TaskCategory string `json:"task_category"`
	// Mode asks for a mode; empty means the configured default. Switches that
	// are off downgrade it (gpu_aware -> multi_category -> benchmark).
	Mode        Mode        `json:"mode,omitempty"`
	Constraints Constraints `json:"constraints,omitempty"`
}

// Constraints are hard filters; a zero field does not constrain.
type Constraints struct {
	// MaxGPUMemoryMB caps the model's gpu_memory_mb (the seed's max_gpu_memory_mb).
	MaxGPUMemoryMB   int64    `json:"max_gpu_memory_mb,omitempty"`
	AllowModels      []string `json:"allow_models,omitempty"`
	DenyModels       []string `json:"deny_models,omitempty"`
	MinContextLength int      `json:"min_context_length,omitempty"`
	// MinScore is the lowest category quality score (0..1) a model may have.
	MinScore      float64  `json:"min_score,omitempty"`
	Quantizations []string `json:"quantizations,omitempty"`
	// Hosts, MaxTemperatureC and MaxUtilizationPct constrain the GPU and so
	// apply in gpu_aware mode only.
	Hosts             []string `json:"hosts,omitempty"`
	MaxTemperatureC   float64  `json:"max_temperature_c,omitempty"`
	MaxUtilizationPct float64  `json:"max_utilization_pct,omitempty"`
}

// Scores are the scorer values behind a final score, each in [0,1].
type Scores struct {
	Quality    float64 `json:"quality"`
	Confidence float64 `json:"confidence"`
	// Placement and its parts are 1 when no GPU was placed.
	Placement   float64 `json:"placement"`
	Utilization float64 `json:"utilization"`
	Headroom    float64 `json:"headroom"`
	Temperature float64 `json:"temperature"`
}

// GPURef names the GPU a model was placed on.
type GPURef struct {
	Host  string `json:"host"`
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
}

// Alternative is a runner-up: another model at its best placement.
type Alternative struct {
	ModelID    string  `json:"model_id"`
	GPU        *GPURef `json:"gpu,omitempty"`
	FinalScore float64 `json:"final_score"`
	Scores     Scores  `json:"scores"`
}

// Reply is the selection-reply message.
type Reply struct {
	RequestID     string `json:"request_id,omitempty"`
	EventID       string `json:"event_id"`
	TaskCategory  string `json:"task_category"`
	RequestedMode Mode   `json:"requested_mode"`
	Mode          Mode   `json:"mode"`
	// Degraded is true when gpu_aware was asked but no fresh GPU was known.
	Degraded        bool          `json:"degraded"`
	ModelID         string        `json:"model_id"`
	ModelName       string        `json:"model_name"`
	Quantization    string        `json:"quantization"`
	GPUMemoryMB     int64         `json:"gpu_memory_mb"`
	PrimaryCategory bool          `json:"primary_category"`
	GPU             *GPURef       `json:"gpu,omitempty"`
	FinalScore      float64       `json:"final_score"`
	Scores          Scores        `json:"scores"`
	Reason          string        `json:"reason"`
	Alternatives    []Alternative `json:"alternatives"`
	// TelemetryAgeMs is the age of the chosen GPU's sample (of the freshest
	// sample when degraded), -1 when there is none.
	TelemetryAgeMs float64 `json:"telemetry_age_ms"`
	// Candidates counts the (model, GPU) pairs that passed every filter and were scored.
	Candidates          int       `json:"candidates"`
	SelectionDurationUs float64   `json:"selection_duration_us"`
	TieSeed             uint64    `json:"tie_seed"`
	Timestamp           time.Time `json:"timestamp"`
}

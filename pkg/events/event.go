// Package events holds the selection-event: one per decision, published to
// orch.events.selection.<category> and stored by the metrics-sink as a row of
// selection_metrics.
package events

import (
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// SelectionEvent is the seed's SelectionMetrics plus what replay and analysis
// need. The first eight fields keep the seed's names; they are the columns
// of selection_metrics.
type SelectionEvent struct {
	Timestamp       time.Time `json:"timestamp"`
	TaskCategory    string    `json:"task_category"`
	SelectedModel   string    `json:"selected_model"`
	PrimaryCategory bool      `json:"primary_category"`
	ConfidenceScore float64   `json:"confidence_score"`
	FinalScore      float64   `json:"final_score"`
	// GPUID is the chosen GPU's index on its host; nil when no GPU was placed.
	GPUID               *int    `json:"gpu_id,omitempty"`
	SelectionDurationMs float64 `json:"selection_duration_ms"`

	// EventID is unique per decision and the row key; it is the Nats-Msg-Id
	// (dedup) of the message it is the first event of.
	EventID       string                  `json:"event_id"`
	RequestID     string                  `json:"request_id,omitempty"`
	Host          string                  `json:"host,omitempty"`
	GPUUUID       string                  `json:"gpu_uuid,omitempty"`
	RequestedMode selection.Mode          `json:"requested_mode"`
	Mode          selection.Mode          `json:"mode"`
	Degraded      bool                    `json:"degraded"`
	Reason        string                  `json:"reason"`
	Scores        selection.Scores        `json:"scores"`
	Alternatives  []selection.Alternative `json:"alternatives"`
	// TelemetryAgeMs is the chosen GPU's sample age, -1 when none.
	TelemetryAgeMs float64 `json:"telemetry_age_ms"`
	// Selector names the selector instance that decided.
	Selector string `json:"selector,omitempty"`
	// Request, TieSeed and GPUs are the decision's inputs, kept for replay
	// and what-if.
	Request selection.Request `json:"request"`
	TieSeed uint64            `json:"tie_seed"`
	// GPUs are the samples of the chosen GPU and of each alternative's GPU as
	// the decision saw them, with the memory reserved on them then.
	GPUs []GPUState `json:"gpus,omitempty"`
}

// GPUState is a GPU sample plus the memory reservations held on it.
type GPUState struct {
	Sample     telemetry.Sample `json:"sample"`
	ReservedMB int64            `json:"reserved_mb"`
}

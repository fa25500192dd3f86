package events

import (
	"github.com/nlocalmodels/orchestrator/pkg/jsonw"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// MarshalJSON encodes the event; the bytes are encoding/json's (json_test.go).
func (e *SelectionEvent) MarshalJSON() ([]byte, error) { return e.AppendJSON(nil) }

// AppendJSON appends the event's JSON to b: the selector encodes one event
// per decision and the sink one per row.
func (e *SelectionEvent) AppendJSON(b []byte) ([]byte, error) {
	w := jsonw.Writer{B: b}
	w.Open()
	w.Key("timestamp")
	w.Time(e.Timestamp)
	w.Key("task_category")
	w.String(e.TaskCategory)
	w.Key("selected_model")
	w.String(e.SelectedModel)
	w.Key("primary_category")
	w.Bool(e.PrimaryCategory)
	w.Key("confidence_score")
	w.Float(e.ConfidenceScore)
	w.Key("final_score")
	w.Float(e.FinalScore)
	if e.GPUID != nil {
		w.Key("gpu_id")
		w.Int(int64(*e.GPUID))
	}
	w.Key("selection_duration_ms")
	w.Float(e.SelectionDurationMs)
	w.Key("event_id")
	w.String(e.EventID)
	w.StringOmitEmpty("request_id", e.RequestID)
	w.StringOmitEmpty("host", e.Host)
	w.StringOmitEmpty("gpu_uuid", e.GPUUUID)
	w.Key("requested_mode")
	w.String(string(e.RequestedMode))
	w.Key("mode")
	w.String(string(e.Mode))
	w.Key("degraded")
	w.Bool(e.Degraded)
	w.Key("reason")
	w.String(e.Reason)
	w.Key("scores")
	e.Scores.WriteJSON(&w)
	w.Key("alternatives")
	selection.WriteAlternatives(&w, e.Alternatives)
	w.Key("telemetry_age_ms")
	w.Float(e.TelemetryAgeMs)
	w.StringOmitEmpty("selector", e.Selector)
	w.Key("request")
	e.Request.WriteJSON(&w)
	w.Key("tie_seed")
	w.Uint(e.TieSeed)
	if len(e.GPUs) > 0 {
		w.Key("gpus")
		w.OpenArray()
		for i := range e.GPUs {
			g := &e.GPUs[i]
			w.Element()
			w.Open()
			w.Key("sample")
			g.Sample.WriteJSON(&w)
			w.Key("reserved_mb")
			w.Int(g.ReservedMB)
			w.Close()
		}
		w.CloseArray()
	}
	w.Close()
	return w.B, w.Err
}

package events

import "github.com/nlocalmodels/orchestrator/pkg/selection"

// FromReply builds the decision event of a reply to req, decided by the
// selector instance named selector.
func FromReply(req *selection.Request, rep *selection.Reply, selector string) SelectionEvent {
	ev := SelectionEvent{
		Timestamp:           rep.Timestamp,
		TaskCategory:        rep.TaskCategory,
		SelectedModel:       rep.ModelID,
		PrimaryCategory:     rep.PrimaryCategory,
		ConfidenceScore:     rep.Scores.Confidence,
		FinalScore:          rep.FinalScore,
		SelectionDurationMs: rep.SelectionDurationUs / 1e3,
		EventID:             rep.EventID,
		RequestID:           rep.RequestID,
		RequestedMode:       rep.RequestedMode,
		Mode:                rep.Mode,
		Degraded:            rep.Degraded,
		Reason:              rep.Reason,
		Scores:              rep.Scores,
		Alternatives:        rep.Alternatives,
		TelemetryAgeMs:      rep.TelemetryAgeMs,
		Selector:            selector,
		Request:             *req,
		TieSeed:             rep.TieSeed,
	}
	if rep.GPU != nil {
		id := rep.GPU.Index
		ev.GPUID = &id
		ev.Host = rep.GPU.Host
		ev.GPUUUID = rep.GPU.UUID
	}
	return ev
}

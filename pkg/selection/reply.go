package selection

import "time"

// Reply turns the result into the selection-reply message for req.
func (r *Result) Reply(req *Request, eventID string, at time.Time, took time.Duration) Reply {
	rep := Reply{
		RequestID:           req.RequestID,
		EventID:             eventID,
		TaskCategory:        req.TaskCategory,
		RequestedMode:       r.RequestedMode,
		Mode:                r.Mode,
		Degraded:            r.Degraded,
		ModelID:             r.Model.ID,
		ModelName:           r.Model.Name,
		Quantization:        r.Model.Quantization,
		GPUMemoryMB:         r.Model.GPUMemoryMB,
		PrimaryCategory:     r.PrimaryCategory,
		FinalScore:          r.FinalScore,
		Scores:              r.Scores,
		Reason:              r.Reason,
		Alternatives:        r.Alternatives,
		TelemetryAgeMs:      r.TelemetryAgeMs,
		Candidates:          r.Candidates,
		SelectionDurationUs: float64(took.Nanoseconds()) / 1e3,
		TieSeed:             r.TieSeed,
		Timestamp:           at,
	}
	if rep.Alternatives == nil {
		rep.Alternatives = []Alternative{}
	}
	if r.GPU != nil {
		ref := r.GPU.Ref
		rep.GPU = &ref
	}
	return rep
}

package selection

import (
	"math"
	"time"
)

// Reply turns the result into the selection-reply message for req. Scores
// are rounded to 6 decimals and times to nanoseconds: finer digits mean
// nothing and cost bytes and encoding time on every reply and event.
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
		FinalScore:          round6(r.FinalScore),
		Scores:              r.Scores.rounded(),
		Reason:              r.Reason,
		Alternatives:        r.Alternatives,
		TelemetryAgeMs:      roundTo(r.TelemetryAgeMs, 1e6),
		Candidates:          r.Candidates,
		SelectionDurationUs: float64(took.Nanoseconds()) / 1e3,
		TieSeed:             r.TieSeed,
		Timestamp:           at,
	}
	if rep.Alternatives == nil {
		rep.Alternatives = []Alternative{}
	}
	for i := range rep.Alternatives {
		a := &rep.Alternatives[i]
		a.FinalScore, a.Scores = round6(a.FinalScore), a.Scores.rounded()
	}
	if r.GPU != nil {
		ref := r.GPU.Ref
		rep.GPU = &ref
	}
	return rep
}

func (s Scores) rounded() Scores {
	return Scores{
		Quality: round6(s.Quality), Confidence: round6(s.Confidence), Placement: round6(s.Placement),
		Utilization: round6(s.Utilization), Headroom: round6(s.Headroom), Temperature: round6(s.Temperature),
	}
}

func round6(v float64) float64 { return roundTo(v, 1e6) }

func roundTo(v, scale float64) float64 { return math.Round(v*scale) / scale }

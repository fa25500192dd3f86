package events

import (
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// FromReply builds the decision event of a reply to req, decided by the
// selector instance named selector on fleet at now: the GPUs of the reply,
// of the top-scoring candidate (top: the result's TopGPU, nil for none) and
// of the alternatives are recorded with their reservations, which is what
// replaying the decision needs.
func FromReply(req *selection.Request, rep *selection.Reply, top *selection.GPU, selector string, fleet *selection.Fleet, now time.Time) SelectionEvent {
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
		ev.GPUs = appendGPU(ev.GPUs, fleet, telemetry.Key(rep.GPU.Host, rep.GPU.Index), now)
	}
	if top != nil {
		ev.GPUs = appendGPU(ev.GPUs, fleet, top.Key, now)
	}
	for _, a := range rep.Alternatives {
		if a.GPU != nil {
			ev.GPUs = appendGPU(ev.GPUs, fleet, telemetry.Key(a.GPU.Host, a.GPU.Index), now)
		}
	}
	return ev
}

func appendGPU(list []GPUState, fleet *selection.Fleet, key string, now time.Time) []GPUState {
	for _, g := range list {
		if g.Sample.Key() == key {
			return list
		}
	}
	g, ok := fleet.Lookup(key)
	if !ok {
		return list
	}
	return append(list, GPUState{Sample: g.Sample, ReservedMB: fleet.ReservedMB(g, now)})
}

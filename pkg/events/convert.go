package events

import (
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// FromReply builds the decision event of a reply to req, decided as res on
// fleet by the selector instance named selector: the GPUs of the reply, of
// the top-scoring candidate and of the alternatives are recorded with the
// reservations the selection saw (res.ReservedMB), which is what replaying
// the decision needs.
func FromReply(req *selection.Request, rep *selection.Reply, res *selection.Result, selector string, fleet *selection.Fleet) SelectionEvent {
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
		ev.GPUs = appendGPU(ev.GPUs, res, fleet, telemetry.Key(rep.GPU.Host, rep.GPU.Index))
	}
	if res.TopGPU != nil {
		ev.GPUs = appendGPU(ev.GPUs, res, fleet, res.TopGPU.Key)
	}
	for _, a := range rep.Alternatives {
		if a.GPU != nil {
			ev.GPUs = appendGPU(ev.GPUs, res, fleet, telemetry.Key(a.GPU.Host, a.GPU.Index))
		}
	}
	return ev
}

func appendGPU(list []GPUState, res *selection.Result, fleet *selection.Fleet, key string) []GPUState {
	for _, g := range list {
		if g.Sample.Key() == key {
			return list
		}
	}
	g, ok := fleet.Lookup(key)
	if !ok {
		return list
	}
	reserved, _ := res.ReservedMB(key)
	return append(list, GPUState{Sample: g.Sample, ReservedMB: reserved})
}

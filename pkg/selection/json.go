package selection

import "github.com/nlocalmodels/orchestrator/pkg/jsonw"

// The writers below give the same bytes as encoding/json for these types
// (json_test.go holds them to it) at a fraction of the cost: the reply is
// encoded once per request.

// MarshalJSON encodes the reply.
func (r *Reply) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }

// AppendJSON appends the reply's JSON to b.
func (r *Reply) AppendJSON(b []byte) ([]byte, error) {
	w := jsonw.Writer{B: b}
	r.WriteJSON(&w)
	return w.B, w.Err
}

// WriteJSON writes the reply as one object.
func (r *Reply) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.StringOmitEmpty("request_id", r.RequestID)
	w.Key("event_id")
	w.String(r.EventID)
	w.Key("task_category")
	w.String(r.TaskCategory)
	w.Key("requested_mode")
	w.String(string(r.RequestedMode))
	w.Key("mode")
	w.String(string(r.Mode))
	w.Key("degraded")
	w.Bool(r.Degraded)
	w.Key("model_id")
	w.String(r.ModelID)
	w.Key("model_name")
	w.String(r.ModelName)
	w.Key("quantization")
	w.String(r.Quantization)
	w.Key("gpu_memory_mb")
	w.Int(r.GPUMemoryMB)
	w.Key("primary_category")
	w.Bool(r.PrimaryCategory)
	if r.GPU != nil {
		w.Key("gpu")
		r.GPU.WriteJSON(w)
	}
	w.Key("final_score")
	w.Float(r.FinalScore)
	w.Key("scores")
	r.Scores.WriteJSON(w)
	w.Key("reason")
	w.String(r.Reason)
	w.Key("alternatives")
	WriteAlternatives(w, r.Alternatives)
	w.Key("telemetry_age_ms")
	w.Float(r.TelemetryAgeMs)
	w.Key("candidates")
	w.Int(int64(r.Candidates))
	w.Key("selection_duration_us")
	w.Float(r.SelectionDurationUs)
	w.Key("tie_seed")
	w.Uint(r.TieSeed)
	w.Key("timestamp")
	w.Time(r.Timestamp)
	w.Close()
}

// WriteJSON writes the request as one object.
func (r *Request) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.StringOmitEmpty("request_id", r.RequestID)
	w.Key("task_category")
	w.String(r.TaskCategory)
	w.StringOmitEmpty("mode", string(r.Mode))
	// omitempty does not omit a struct: constraints is always written.
	w.Key("constraints")
	r.Constraints.WriteJSON(w)
	w.Close()
}

// WriteJSON writes the constraints that are set as one object.
func (c *Constraints) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.IntOmitEmpty("max_gpu_memory_mb", c.MaxGPUMemoryMB)
	w.StringsOmitEmpty("allow_models", c.AllowModels)
	w.StringsOmitEmpty("deny_models", c.DenyModels)
	w.IntOmitEmpty("min_context_length", int64(c.MinContextLength))
	w.FloatOmitEmpty("min_score", c.MinScore)
	w.StringsOmitEmpty("quantizations", c.Quantizations)
	w.StringsOmitEmpty("hosts", c.Hosts)
	w.FloatOmitEmpty("max_temperature_c", c.MaxTemperatureC)
	w.FloatOmitEmpty("max_utilization_pct", c.MaxUtilizationPct)
	w.Close()
}

// WriteJSON writes the scores as one object.
func (s *Scores) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.Key("quality")
	w.Float(s.Quality)
	w.Key("confidence")
	w.Float(s.Confidence)
	w.Key("placement")
	w.Float(s.Placement)
	w.Key("utilization")
	w.Float(s.Utilization)
	w.Key("headroom")
	w.Float(s.Headroom)
	w.Key("temperature")
	w.Float(s.Temperature)
	w.Close()
}

// WriteJSON writes the GPU reference as one object.
func (g *GPURef) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.Key("host")
	w.String(g.Host)
	w.Key("index")
	w.Int(int64(g.Index))
	w.Key("uuid")
	w.String(g.UUID)
	w.Key("name")
	w.String(g.Name)
	w.Close()
}

// WriteAlternatives writes alts as an array, or null when nil.
func WriteAlternatives(w *jsonw.Writer, alts []Alternative) {
	if alts == nil {
		w.Null()
		return
	}
	w.OpenArray()
	for i := range alts {
		a := &alts[i]
		w.Element()
		w.Open()
		w.Key("model_id")
		w.String(a.ModelID)
		if a.GPU != nil {
			w.Key("gpu")
			a.GPU.WriteJSON(w)
		}
		w.Key("final_score")
		w.Float(a.FinalScore)
		w.Key("scores")
		a.Scores.WriteJSON(w)
		w.Close()
	}
	w.CloseArray()
}

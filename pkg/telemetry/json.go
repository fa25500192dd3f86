package telemetry

import "github.com/nlocalmodels/orchestrator/pkg/jsonw"

// WriteJSON writes the sample as one object, the same bytes as
// encoding/json (json_test.go): decision events carry several samples each.
func (s *Sample) WriteJSON(w *jsonw.Writer) {
	w.Open()
	w.Key("host")
	w.String(s.Host)
	w.Key("index")
	w.Int(int64(s.Index))
	w.Key("uuid")
	w.String(s.UUID)
	w.Key("name")
	w.String(s.Name)
	w.Key("timestamp")
	w.Time(s.Timestamp)
	w.Key("source")
	w.String(s.Source)
	w.Key("memory_total_mb")
	w.Int(s.MemoryTotalMB)
	w.Key("memory_used_mb")
	w.Int(s.MemoryUsedMB)
	w.Key("memory_free_mb")
	w.Int(s.MemoryFreeMB)
	w.Key("utilization_gpu_pct")
	w.Float(s.UtilizationGPUPct)
	w.Key("utilization_memory_pct")
	w.Float(s.UtilizationMemoryPct)
	w.Key("temperature_c")
	w.Float(s.TemperatureC)
	w.Key("power_w")
	w.Float(s.PowerW)
	w.Key("power_limit_w")
	w.Float(s.PowerLimitW)
	w.Key("healthy")
	w.Bool(s.Healthy)
	w.StringOmitEmpty("health_reason", s.HealthReason)
	w.UintOmitEmpty("last_xid", s.LastXid)
	w.StringsOmitEmpty("failed_reads", s.FailedReads)
	w.Close()
}

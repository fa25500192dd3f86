// Package telemetry holds the GPU sample published by the telemetry agents and
// the latest-sample cache the selector reads.
package telemetry

import "time"

// Sample is one reading of one GPU, published to orch.telemetry.gpu.<host>.<index>.
// Field names follow nvidia-smi / dcgm-exporter.
type Sample struct {
	Host      string    `json:"host"`
	Index     int       `json:"index"`
	UUID      string    `json:"uuid"`
	Name      string    `json:"name"`
	Timestamp time.Time `json:"timestamp"`
	// Source is "nvml" or "simulated".
	Source        string `json:"source"`
	MemoryTotalMB int64  `json:"memory_total_mb"`
	MemoryUsedMB  int64  `json:"memory_used_mb"`
	MemoryFreeMB  int64  `json:"memory_free_mb"`
	// UtilizationGPUPct and UtilizationMemoryPct are 0..100.
	UtilizationGPUPct    float64 `json:"utilization_gpu_pct"`
	UtilizationMemoryPct float64 `json:"utilization_memory_pct"`
	TemperatureC         float64 `json:"temperature_c"`
	PowerW               float64 `json:"power_w"`
	PowerLimitW          float64 `json:"power_limit_w"`
	Healthy              bool    `json:"healthy"`
	// HealthReason says why the GPU is unhealthy (e.g. "Xid 79: GPU has fallen off the bus").
	HealthReason string `json:"health_reason,omitempty"`
	// LastXid is the most recent critical Xid error seen on the GPU, 0 for none.
	LastXid uint64 `json:"last_xid,omitempty"`
	// FailedReads names the reads that failed for this sample (e.g. "power").
	FailedReads []string `json:"failed_reads,omitempty"`
}

// Key identifies the GPU across samples: "<host>/<index>".
func (s *Sample) Key() string { return Key(s.Host, s.Index) }

// Names of the reads a sample is made of, as listed in Sample.FailedReads:
// agents name their failed reads with them, and the selector leaves out of
// its scoring what a failed read left unknown.
const (
	ReadHandle      = "handle"
	ReadUUID        = "uuid"
	ReadName        = "name"
	ReadMemory      = "memory"
	ReadUtilization = "utilization"
	ReadTemperature = "temperature"
	ReadPower       = "power"
	ReadPowerLimit  = "power_limit"
	// ReadSample marks a sample published in place of a read the source
	// could not make at all (its error is in HealthReason).
	ReadSample = "sample"
	// ReadTimeout marks a sample published in place of a read that did not
	// finish within Config.ReadTimeout.
	ReadTimeout = "timeout"
)

// Bounds of a sample's readings (gpu-sample.schema.json has the same): an
// agent reports a value beyond them as a failed read, not a measurement.
const (
	MaxMemoryMB     = 16777216 // 16 TiB
	MaxPct          = 100
	MaxTemperatureC = 200
	MaxWatts        = 100000
)

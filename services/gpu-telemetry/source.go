package gputelemetry

import (
	"context"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Source is the hardware behind the agent: NVML, the simulator, or a test fake.
// Sample may be called for different indexes at once.
type Source interface {
	// Devices lists the GPU indexes the source reports; fixed for its lifetime.
	Devices() []int
	// Sample reads one GPU. A failed read is recorded in the sample
	// (FailedReads, Healthy, HealthReason), not returned: the error is only
	// for a call that could read nothing (unknown index, closed source, done ctx).
	// The caller sets Host.
	Sample(ctx context.Context, index int) (telemetry.Sample, error)
	// Close releases the hardware; the source cannot be used afterwards.
	Close() error
	// Kind is SourceNVML or SourceSimulated: the Source of every sample,
	// those published for a read that failed or timed out included.
	Kind() string
}

// Source kinds, as in Config.Source and telemetry.Sample.Source.
const (
	SourceAuto      = "auto"
	SourceNVML      = "nvml"
	SourceSimulated = "simulated"
)

// bytesPerMB converts NVML's byte counts to the MiB nvidia-smi shows.
const bytesPerMB = 1024 * 1024

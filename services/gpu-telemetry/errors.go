package gputelemetry

import "errors"

// Sentinel errors of the gpu-telemetry service; callers test them with errors.Is.
var (
	// ErrConfig: the service configuration cannot work.
	ErrConfig = errors.New("gpu-telemetry: bad config")
	// ErrNVMLUnavailable: this binary was built without NVML (no cgo or not Linux).
	ErrNVMLUnavailable = errors.New("gpu-telemetry: NVML support not built in (needs linux and cgo)")
	// ErrNVMLInit: NVML did not initialise (no driver, no library, no permission).
	ErrNVMLInit = errors.New("gpu-telemetry: NVML init failed")
	// ErrNVML: an NVML call needed to set up the source failed.
	ErrNVML = errors.New("gpu-telemetry: NVML call failed")
	// ErrUnknownDevice: a sample was asked for a GPU index the source does not report.
	ErrUnknownDevice = errors.New("gpu-telemetry: unknown GPU index")
	// ErrSourceClosed: the source was used after Close.
	ErrSourceClosed = errors.New("gpu-telemetry: source closed")
	// ErrNoDevices: the source found no GPU to report.
	ErrNoDevices = errors.New("gpu-telemetry: no GPUs to report")
	// ErrPublish: samples cannot be published any more (connection closed).
	ErrPublish = errors.New("gpu-telemetry: cannot publish samples")
	// ErrNotReady: the agent has published nothing yet, or its source is closed.
	ErrNotReady = errors.New("gpu-telemetry: not ready")
	// ErrUnknownGPUType: a simulated GPU type is not in the catalogue of GPUTypes.
	ErrUnknownGPUType = errors.New("gpu-telemetry: unknown simulated GPU type")
)

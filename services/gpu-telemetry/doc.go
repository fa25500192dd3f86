// Package gputelemetry is the gpu-telemetry service of the model orchestrator:
// one agent per GPU host that samples every GPU each interval (default 5 s)
// and publishes a telemetry.Sample to orch.telemetry.gpu.<host>.<index>.
//
// Sources: NVML through go-nvml (linux and cgo builds only; initialised once,
// never touched again after a failed Init), a simulator of real GPU models
// whose load follows bounded random walks, or any Source given to New.
// With TELEMETRY_SOURCE=auto a host without a driver is an error unless
// TELEMETRY_SIMULATE=true.
//
// Health: a lost GPU (ERROR_GPU_IS_LOST), a GPU without an NVML handle, or a
// critical Xid other than the application ones (13, 31, 43, 45, 68, 109) is
// published unhealthy with a reason; an Xid keeps the GPU unhealthy until the
// agent restarts, as a GPU reset is needed anyway. GPUs in MIG mode are
// skipped with a log line: the selector does not place work on MIG slices.
//
// Cadence: ticks fall on start + k*interval; GPUs are read concurrently, each
// bounded by TELEMETRY_READ_TIMEOUT, past which an unhealthy marker sample
// (FailedReads ["timeout"]) is published instead and no second read of that
// GPU starts until the first returns.
//
// Metrics (WithMetrics): every published sample sets the per-GPU gauges
// orch_gpu_* {host, index, gpu (UUID), name}; a failed read removes its
// gauge's series rather than report a zero. A critical Xid is counted once,
// when it first shows, in orch_gpu_xid_errors_total; failed reads, samples
// published, publish errors and read durations are orch_telemetry_*.
package gputelemetry

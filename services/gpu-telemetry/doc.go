// Package gputelemetry is the gpu-telemetry service of the model orchestrator.
package gputelemetry

//go:build linux && cgo

package gputelemetry

const nvmlBuilt = true

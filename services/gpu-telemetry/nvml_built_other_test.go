//go:build !(linux && cgo)

package gputelemetry

const nvmlBuilt = false

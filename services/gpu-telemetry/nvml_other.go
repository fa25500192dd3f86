//go:build !(linux && cgo)

package gputelemetry

import "github.com/rs/zerolog"

// openNVML reports that this build has no NVML: go-nvml needs cgo on Linux.
func openNVML(zerolog.Logger) (Source, error) {
	return nil, ErrNVMLUnavailable
}

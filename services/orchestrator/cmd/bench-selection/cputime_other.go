//go:build !unix

package main

import "time"

// processCPU is not measured here: the CPU columns print n/a.
func processCPU() (time.Duration, bool) { return 0, false }

//go:build linux && cgo

package gputelemetry

import (
	"os"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/rs/zerolog"
)

// TestRealNVML reads the machine's GPUs through the real driver. It runs only
// with ORCH_NVML_TEST=1, on a host with an NVIDIA driver and at least one GPU.
func TestRealNVML(t *testing.T) {
	if os.Getenv("ORCH_NVML_TEST") != "1" {
		t.Skip("set ORCH_NVML_TEST=1 on a host with an NVIDIA GPU and driver to read real GPUs")
	}
	src, err := NewNVML(nvml.New(), zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatalf("NVML on this host: %v", err)
	}
	defer func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if len(src.Devices()) == 0 {
		t.Fatal("NVML reports no GPUs (or only MIG-enabled ones)")
	}
	for _, i := range src.Devices() {
		s := sampleOf(t, src, i)
		t.Logf("GPU %d: %+v", i, s)
		problems := []struct {
			bad  bool
			what string
		}{
			{s.Index != i, "index"},
			{!strings.HasPrefix(s.UUID, "GPU-"), "uuid"},
			{s.Name == "", "name"},
			{s.Source != SourceNVML, "source"},
			{s.Timestamp.IsZero(), "timestamp"},
			{s.MemoryTotalMB <= 0, "memory total"},
			{s.MemoryUsedMB < 0 || s.MemoryUsedMB > s.MemoryTotalMB, "memory used"},
			{s.MemoryFreeMB < 0 || s.MemoryFreeMB > s.MemoryTotalMB, "memory free"},
			{s.UtilizationGPUPct < 0 || s.UtilizationGPUPct > 100, "gpu utilisation"},
			{s.UtilizationMemoryPct < 0 || s.UtilizationMemoryPct > 100, "memory utilisation"},
			{s.TemperatureC <= 0 || s.TemperatureC > 120, "temperature"},
			{s.PowerW <= 0 || (s.PowerLimitW > 0 && s.PowerW > s.PowerLimitW*1.2), "power"},
			{s.PowerLimitW <= 0, "power limit"},
			{!s.Healthy, "health: " + s.HealthReason},
			{len(s.FailedReads) != 0, "failed reads " + strings.Join(s.FailedReads, ",")},
		}
		for _, p := range problems {
			if p.bad {
				t.Errorf("GPU %d: implausible %s", i, p.what)
			}
		}
	}
}

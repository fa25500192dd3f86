package gputelemetry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs/obstest"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// gpuSeries names a per-GPU gauge series of host node-1.
func gpuSeries(name string, index int, uuid, gpuName string) string {
	return obstest.Series(name, map[string]string{"host": "node-1", "index": strconv.Itoa(index), "gpu": uuid, "name": gpuName})
}

// settle waits until Run has finished the current tick (it asks for its
// sleep then) and hands the wait back, so that clock.next still works.
func (h *harness) settle(t *testing.T) {
	t.Helper()
	d := <-h.clock.waits
	h.clock.waits <- d
}

func TestMetricsFollowSimulatedSamples(t *testing.T) {
	src, err := NewSimulated(SimConfig{GPUs: []GPUType{GPUTypes["H100-SXM5-80GB"], GPUTypes["L40S"]}, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := startService(t, testConfig(), src, WithMetrics(reg))
	samples := h.receive(t, 2)
	h.settle(t)
	got := obstest.Scrape(t, reg)

	type check struct {
		series string
		want   float64
	}
	checks := []check{
		{obstest.Series("orch_telemetry_samples_published_total", nil), 2},
		{obstest.Series("orch_telemetry_publish_errors_total", nil), 0},
		{obstest.Series("orch_telemetry_sample_duration_seconds_count", nil), 2},
	}
	for i := range 2 {
		s := samples[bus.TelemetrySubject("node-1", i)]
		if s.UUID == "" || s.Name == "" {
			t.Fatalf("GPU %d: sample %+v names no GPU", i, s)
		}
		gpu := func(name string, want float64) check { return check{gpuSeries(name, i, s.UUID, s.Name), want} }
		checks = append(checks,
			gpu("orch_gpu_utilization_ratio", s.UtilizationGPUPct/100),
			gpu("orch_gpu_memory_used_bytes", float64(s.MemoryUsedMB)*1024*1024),
			gpu("orch_gpu_memory_total_bytes", float64(s.MemoryTotalMB)*1024*1024),
			gpu("orch_gpu_temperature_celsius", s.TemperatureC),
			gpu("orch_gpu_power_watts", s.PowerW),
			gpu("orch_gpu_power_limit_watts", s.PowerLimitW),
			gpu("orch_gpu_healthy", 1),
		)
	}
	for _, c := range checks {
		t.Run(c.series, func(t *testing.T) {
			v, ok := got[c.series]
			if !ok {
				t.Fatalf("no such series; have %v", slices.Sorted(maps.Keys(got)))
			}
			if v != c.want {
				t.Fatalf("got %v, want %v", v, c.want)
			}
		})
	}
	for name := range got {
		if strings.HasPrefix(name, "orch_telemetry_read_failures_total") || strings.HasPrefix(name, "orch_gpu_xid_errors_total") {
			t.Errorf("%s: no read failed and no Xid happened", name)
		}
	}
}

func TestMetricsOfFaults(t *testing.T) {
	// GPU 0: its UUID and temperature cannot be read at first, and it
	// reports Xid 79 in every sample; GPU 1 reads well, then not at all.
	src := &fakeSource{n: 2}
	src.read = func(ctx context.Context, i int) (telemetry.Sample, error) {
		call := src.callsOf(i)
		smp, _ := goodRead(ctx, i)
		switch {
		case i == 0 && call == 1:
			smp.UUID, smp.FailedReads = "", []string{telemetry.ReadUUID, telemetry.ReadTemperature}
			fallthrough
		case i == 0:
			smp.Healthy, smp.LastXid, smp.HealthReason = false, 79, xidReason(79)
			smp.TemperatureC = 71
			if call == 1 {
				smp.TemperatureC = 0
			}
		case i == 1 && call > 1:
			return telemetry.Sample{}, errors.New("driver gone")
		}
		return smp, nil
	}
	reg := prometheus.NewRegistry()
	h := startService(t, testConfig(), src, WithMetrics(reg))

	const name = "NVIDIA L40S"
	failures := func(index int, read string) string {
		return obstest.Series("orch_telemetry_read_failures_total", map[string]string{"host": "node-1", "index": strconv.Itoa(index), "read": read})
	}
	xids := func(uuid string) string {
		return obstest.Series("orch_gpu_xid_errors_total", map[string]string{"host": "node-1", "index": "0", "gpu": uuid, "xid": "79"})
	}
	ticks := []struct {
		want   map[string]float64
		absent []string
	}{
		{
			want: map[string]float64{
				gpuSeries("orch_gpu_healthy", 0, "", name):                    0,
				gpuSeries("orch_gpu_utilization_ratio", 0, "", name):          0,
				gpuSeries("orch_gpu_healthy", 1, "GPU-1", name):               1,
				gpuSeries("orch_gpu_temperature_celsius", 1, "GPU-1", name):   0,
				failures(0, telemetry.ReadUUID):                               1,
				failures(0, telemetry.ReadTemperature):                        1,
				xids(""):                                                      1,
				obstest.Series("orch_telemetry_samples_published_total", nil): 2,
			},
			absent: []string{gpuSeries("orch_gpu_temperature_celsius", 0, "", name)},
		},
		{
			want: map[string]float64{
				gpuSeries("orch_gpu_healthy", 0, "GPU-0", name):               0,
				gpuSeries("orch_gpu_temperature_celsius", 0, "GPU-0", name):   71,
				gpuSeries("orch_gpu_healthy", 1, "GPU-1", name):               0,
				failures(0, telemetry.ReadUUID):                               1,
				failures(0, telemetry.ReadTemperature):                        1,
				failures(1, telemetry.ReadSample):                             1,
				xids(""):                                                      1,
				obstest.Series("orch_telemetry_samples_published_total", nil): 4,
			},
			absent: []string{
				gpuSeries("orch_gpu_healthy", 0, "", name), // the UUID became known
				gpuSeries("orch_gpu_utilization_ratio", 0, "", name),
				gpuSeries("orch_gpu_temperature_celsius", 1, "GPU-1", name), // nothing read
				gpuSeries("orch_gpu_memory_total_bytes", 1, "GPU-1", name),
				xids("GPU-0"), // counted once, when it first showed (under no UUID)
			},
		},
	}
	for n, tick := range ticks {
		if n > 0 {
			h.clock.next(t)
		}
		h.receive(t, 2)
		h.settle(t)
		got := obstest.Scrape(t, reg)
		t.Run(fmt.Sprintf("tick %d", n+1), func(t *testing.T) {
			for s, want := range tick.want {
				if v, ok := got[s]; !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", s, v, ok, want)
				}
			}
			for _, s := range tick.absent {
				if v, ok := got[s]; ok {
					t.Errorf("%s = %v, want no such series", s, v)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	// ran starts an agent on one GPU and lets it publish one tick.
	ran := func(t *testing.T) *harness {
		h := startService(t, testConfig(), &fakeSource{n: 1, read: goodRead})
		h.receive(t, 1)
		h.settle(t)
		return h
	}
	tests := []struct {
		name    string
		svc     func(t *testing.T) *Service
		wantErr error
	}{
		{"before the first sample", func(t *testing.T) *Service {
			_, nc := natstest.Start(t)
			svc, err := New(testConfig(), nc, WithSource(&fakeSource{n: 1, read: goodRead}), WithLogger(zerolog.Nop()))
			if err != nil {
				t.Fatal(err)
			}
			return svc
		}, ErrNotReady},
		{"after a sample", func(t *testing.T) *Service { return ran(t).svc }, nil},
		{"with NATS gone (samples only buffered)", func(t *testing.T) *Service {
			_, nc := natstest.Start(t)
			svc, err := New(testConfig(), nc, WithSource(&fakeSource{n: 1, read: goodRead}), WithLogger(zerolog.Nop()))
			if err != nil {
				t.Fatal(err)
			}
			svc.published.Add(1) // as if it had published, then lost NATS
			nc.Close()
			return svc
		}, ErrNotReady},
		{"after Run returned", func(t *testing.T) *Service {
			h := ran(t)
			if err := h.shutdown(t); err != nil {
				t.Fatal(err)
			}
			return h.svc
		}, ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.svc(t).Check(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, nc := natstest.Start(t)
	newAgent := func() error {
		_, err := New(testConfig(), nc, WithSource(&fakeSource{n: 1, read: goodRead}), WithLogger(zerolog.Nop()), WithMetrics(reg))
		return err
	}
	if err := newAgent(); err != nil {
		t.Fatalf("first agent: %v", err)
	}
	if err := newAgent(); !errors.Is(err, ErrConfig) {
		t.Fatalf("second agent on the same registry: %v, want ErrConfig", err)
	}
}

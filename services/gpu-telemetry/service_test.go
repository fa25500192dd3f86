package gputelemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// fakeSource answers Sample with read(index); it counts calls per GPU.
type fakeSource struct {
	n    int
	read func(ctx context.Context, index int) (telemetry.Sample, error)

	mu     sync.Mutex
	calls  map[int]int
	closed bool
}

func (f *fakeSource) Kind() string { return SourceSimulated }

func (f *fakeSource) Devices() []int {
	out := make([]int, f.n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (f *fakeSource) Sample(ctx context.Context, index int) (telemetry.Sample, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[int]int{}
	}
	f.calls[index]++
	f.mu.Unlock()
	return f.read(ctx, index)
}

func (f *fakeSource) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeSource) callsOf(i int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[i]
}

func goodRead(_ context.Context, i int) (telemetry.Sample, error) {
	return telemetry.Sample{
		Index: i, UUID: fmt.Sprintf("GPU-%d", i), Name: "NVIDIA L40S", Source: "fake",
		MemoryTotalMB: 46068, MemoryFreeMB: 46068, PowerLimitW: 350, Healthy: true,
	}, nil
}

// fakeClock drives Run's ticks: each wait Run asks for is sent on waits, and
// Run sleeps until the test calls fire.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	waits chan time.Duration
	wake  chan time.Time
	// woke is the time next last woke Run at: reads after it move t on.
	woke time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{
		t:     time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		waits: make(chan time.Duration, 64),
		wake:  make(chan time.Time),
	}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.wake
}

// next waits for Run to ask for its sleep, lets that time pass and wakes it.
func (c *fakeClock) next(t *testing.T) time.Duration {
	t.Helper()
	d := <-c.waits
	c.advance(d)
	at := c.now()
	c.mu.Lock()
	c.woke = at
	c.mu.Unlock()
	c.wake <- at
	return d
}

// wokeAt is when next last woke Run.
func (c *fakeClock) wokeAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.woke
}

type harness struct {
	svc   *Service
	clock *fakeClock
	sub   *nats.Subscription
	nc    *nats.Conn
	done  chan error
	stop  context.CancelFunc
}

func testConfig() Config {
	return Config{Host: "node-1", Interval: time.Hour, ReadTimeout: 30 * time.Minute, Source: SourceAuto}
}

// startService runs a service on a fresh natstest server with src, a fake
// clock and opts, subscribed to every GPU sample.
func startService(t *testing.T, cfg Config, src Source, opts ...Option) *harness {
	t.Helper()
	_, nc := natstest.Start(t)
	sub, err := nc.SubscribeSync(bus.TelemetryWildcard)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	svc, err := New(cfg, nc, append([]Option{WithSource(src), WithLogger(zerolog.Nop())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	svc.now, svc.after = clk.now, clk.after
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{svc: svc, clock: clk, sub: sub, nc: nc, done: make(chan error, 1), stop: cancel}
	go func() { h.done <- svc.Run(ctx) }()
	t.Cleanup(func() { h.shutdown(t) })
	return h
}

// shutdown stops Run and returns its error (once; later calls return nil).
func (h *harness) shutdown(t *testing.T) error {
	t.Helper()
	if h.stop == nil {
		return nil
	}
	h.stop()
	h.stop = nil
	return <-h.done
}

// receive returns the next n samples, by subject.
func (h *harness) receive(t *testing.T, n int) map[string]telemetry.Sample {
	t.Helper()
	got := map[string]telemetry.Sample{}
	for range n {
		msg, err := h.sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("waiting for sample %d of %d: %v", len(got)+1, n, err)
		}
		var s telemetry.Sample
		if err := json.Unmarshal(msg.Data, &s); err != nil {
			t.Fatalf("sample on %s: %v", msg.Subject, err)
		}
		if _, dup := got[msg.Subject]; dup {
			t.Fatalf("two samples on %s in one tick", msg.Subject)
		}
		got[msg.Subject] = s
	}
	return got
}

func TestPublishesOneSamplePerDevicePerTick(t *testing.T) {
	const gpus, ticks = 3, 4
	src := &fakeSource{n: gpus, read: goodRead}
	h := startService(t, testConfig(), src)
	for tick := range ticks {
		if tick > 0 {
			h.clock.next(t)
		}
		got := h.receive(t, gpus)
		for i := range gpus {
			subject := fmt.Sprintf("orch.telemetry.gpu.node-1.%d", i)
			s, ok := got[subject]
			if !ok {
				t.Fatalf("tick %d: nothing on %s (got %v)", tick, subject, got)
			}
			if s.Host != "node-1" || s.Index != i || s.UUID != fmt.Sprintf("GPU-%d", i) || !s.Healthy {
				t.Fatalf("tick %d: %s carried %+v", tick, subject, s)
			}
		}
	}
	if err := h.shutdown(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Nothing but one sample per GPU per tick was sent.
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := h.sub.Pending(); n != 0 {
		t.Fatalf("%d extra samples", n)
	}
	for i := range gpus {
		if c := src.callsOf(i); c != ticks {
			t.Errorf("GPU %d read %d times in %d ticks", i, c, ticks)
		}
	}
	// The telemetry stream keeps them for starting selectors.
	js := natstest.JetStream(t, h.nc)
	st, err := js.Stream(context.Background(), bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	// The agent publishes without waiting for the stream's acks: the stream
	// may store the last samples a moment after the subscription saw them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Msgs; n == gpus*ticks {
			break
		} else if n > gpus*ticks || time.Now().After(deadline) {
			t.Fatalf("stream holds %d samples, want %d", n, gpus*ticks)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !src.closed {
		t.Fatal("source not closed when Run returned")
	}
}

func TestSlowDeviceDoesNotHoldBackOthers(t *testing.T) {
	release := make(chan struct{})
	src := &fakeSource{n: 3, read: func(ctx context.Context, i int) (telemetry.Sample, error) {
		if i == 1 {
			<-release
		}
		return goodRead(ctx, i)
	}}
	// ReadTimeout is long: GPU 1 is released only once the others were seen,
	// which deadlocks if the publisher waited for GPU 1 first.
	h := startService(t, testConfig(), src)
	got := h.receive(t, 2)
	for _, i := range []int{0, 2} {
		if _, ok := got[bus.TelemetrySubject("node-1", i)]; !ok {
			t.Fatalf("GPU %d not published while GPU 1 was slow: %v", i, got)
		}
	}
	close(release)
	got = h.receive(t, 1)
	if s, ok := got[bus.TelemetrySubject("node-1", 1)]; !ok || !s.Healthy {
		t.Fatalf("GPU 1 after release: %v", got)
	}
}

func TestHungReadIsReportedAndNotRepeated(t *testing.T) {
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	src := &fakeSource{n: 2, read: func(ctx context.Context, i int) (telemetry.Sample, error) {
		if i == 1 {
			<-hung
		}
		return goodRead(ctx, i)
	}}
	cfg := testConfig()
	cfg.ReadTimeout = 10 * time.Millisecond
	h := startService(t, cfg, src)

	wantReasons := []string{"read timed out after 10ms", "GPU read still running from an earlier tick"}
	for tick, reason := range wantReasons {
		if tick > 0 {
			h.clock.next(t)
		}
		got := h.receive(t, 2)
		if s := got[bus.TelemetrySubject("node-1", 0)]; !s.Healthy {
			t.Fatalf("tick %d: GPU 0 %+v", tick, s)
		}
		s := got[bus.TelemetrySubject("node-1", 1)]
		if s.Healthy || s.HealthReason != reason || !slices.Equal(s.FailedReads, []string{telemetry.ReadTimeout}) {
			t.Fatalf("tick %d: GPU 1 marker %+v, want reason %q", tick, s, reason)
		}
		// GPU 1 never had a good read: the source kind still comes with the
		// marker, which the schema requires.
		if s.Host != "node-1" || s.Index != 1 || s.Timestamp.IsZero() || s.Source != SourceSimulated {
			t.Fatalf("tick %d: marker lacks identity or source: %+v", tick, s)
		}
	}
	if c := src.callsOf(1); c != 1 {
		t.Fatalf("hung GPU read %d times, want 1 (no pile-up)", c)
	}
}

func TestReadErrorIsPublishedAsMarker(t *testing.T) {
	src := &fakeSource{n: 2, read: func(ctx context.Context, i int) (telemetry.Sample, error) {
		if i == 0 {
			return telemetry.Sample{}, fmt.Errorf("%w: 0", ErrUnknownDevice)
		}
		return goodRead(ctx, i)
	}}
	h := startService(t, testConfig(), src)
	got := h.receive(t, 2)
	s := got[bus.TelemetrySubject("node-1", 0)]
	if s.Healthy || !slices.Equal(s.FailedReads, []string{telemetry.ReadSample}) || !strings.Contains(s.HealthReason, "unknown GPU index") {
		t.Fatalf("marker %+v", s)
	}
}

func TestCadenceDoesNotDrift(t *testing.T) {
	cfg := testConfig()
	cfg.Interval = 5 * time.Second
	cfg.ReadTimeout = time.Second
	// Each tick's reads take the time given per tick on the fake clock.
	costs := []time.Duration{300 * time.Millisecond, 300 * time.Millisecond, 12500 * time.Millisecond, 0}
	var (
		mu   sync.Mutex
		tick int
		clk  *fakeClock
	)
	src := &fakeSource{n: 1, read: func(ctx context.Context, i int) (telemetry.Sample, error) {
		mu.Lock()
		defer mu.Unlock()
		if tick < len(costs) {
			clk.advance(costs[tick])
		}
		tick++
		return goodRead(ctx, i)
	}}
	_, nc := natstest.Start(t)
	svc, err := New(cfg, nc, WithSource(src), WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	clk = newFakeClock()
	start := clk.now()
	svc.now, svc.after = clk.now, clk.after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	// Sleeps end on the grid start + k*5s whatever each tick cost; the tick
	// that overran 2.5 intervals skips the two missed ticks.
	wantWaits := []time.Duration{4700 * time.Millisecond, 4700 * time.Millisecond, 2500 * time.Millisecond, 5 * time.Second}
	wantAt := []time.Duration{5 * time.Second, 10 * time.Second, 25 * time.Second, 30 * time.Second}
	for k, want := range wantWaits {
		if got := clk.next(t); got != want {
			t.Fatalf("wait %d = %s, want %s", k, got, want)
		}
		// when it woke: the next tick's read may already have moved the clock
		if at := clk.wokeAt().Sub(start); at != wantAt[k] {
			t.Fatalf("tick %d at %s, want %s", k+1, at, wantAt[k])
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNextTick(t *testing.T) {
	start := time.Unix(1000, 0)
	const iv = 5 * time.Second
	tests := []struct {
		name        string
		elapsed     time.Duration
		last        int64
		wantNext    int64
		wantSkipped int64
	}{
		{"on time", 200 * time.Millisecond, 0, 1, 0},
		{"exactly on a tick", 5 * time.Second, 0, 2, 1},
		{"two ticks late", 12 * time.Second, 0, 3, 2},
		{"later tick on time", 41 * time.Second, 8, 9, 0},
		{"clock behind the last tick", time.Second, 4, 5, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next, at, skipped := nextTick(start, iv, start.Add(tc.elapsed), tc.last)
			if next != tc.wantNext || skipped != tc.wantSkipped || !at.Equal(start.Add(time.Duration(tc.wantNext)*iv)) {
				t.Fatalf("got next %d at %s skipped %d, want %d, %d", next, at.Sub(start), skipped, tc.wantNext, tc.wantSkipped)
			}
		})
	}
}

func TestRunStopsWhenConnectionCloses(t *testing.T) {
	src := &fakeSource{n: 1, read: goodRead}
	h := startService(t, testConfig(), src)
	h.receive(t, 1)
	h.nc.Close()
	h.clock.next(t)
	if err := <-h.done; !errors.Is(err, ErrPublish) {
		t.Fatalf("Run = %v, want ErrPublish", err)
	}
	h.stop()
	h.stop = nil
}

func TestHostIsSanitised(t *testing.T) {
	tests := []struct{ in, want string }{
		{"gpu-node-1", "gpu-node-1"},
		{"gpu01.dc1.example.com", "gpu01-dc1-example-com"},
		{" rack 7*a>b ", "rack-7-a-b"},
		{"nœud_1", "n-ud_1"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := SanitizeHost(tc.in); got != tc.want {
				t.Fatalf("SanitizeHost(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	t.Run("used in subjects and samples", func(t *testing.T) {
		cfg := testConfig()
		cfg.Host = "gpu01.dc1"
		h := startService(t, cfg, &fakeSource{n: 1, read: goodRead})
		got := h.receive(t, 1)
		s, ok := got["orch.telemetry.gpu.gpu01-dc1.0"]
		if !ok || s.Host != "gpu01-dc1" {
			t.Fatalf("got %v", got)
		}
	})
}

func TestNewErrors(t *testing.T) {
	_, nc := natstest.Start(t)
	mod := func(f func(*Config)) Config {
		c := testConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		nc      *nats.Conn
		src     Source
		wantErr error
		wantMsg string
	}{
		{name: "no connection", cfg: testConfig(), wantErr: ErrConfig},
		{name: "zero interval", cfg: mod(func(c *Config) { c.Interval = 0 }), nc: nc, wantErr: ErrConfig, wantMsg: "TELEMETRY_INTERVAL"},
		{name: "read timeout not below interval", cfg: mod(func(c *Config) { c.ReadTimeout = c.Interval }), nc: nc, wantErr: ErrConfig, wantMsg: "TELEMETRY_READ_TIMEOUT"},
		{name: "unknown source", cfg: mod(func(c *Config) { c.Source = "dcgm" }), nc: nc, wantErr: ErrConfig, wantMsg: "TELEMETRY_SOURCE"},
		{name: "fail rate outside 0..1", cfg: mod(func(c *Config) { c.SimFailRate = -2 }), nc: nc, wantErr: ErrConfig, wantMsg: "TELEMETRY_SIM_FAIL_RATE -2"},
		{name: "Xid rate outside 0..1", cfg: mod(func(c *Config) { c.SimXidRate = 1.5 }), nc: nc, wantErr: ErrConfig, wantMsg: "TELEMETRY_SIM_XID_RATE 1.5"},
		{name: "host of nothing but spaces", cfg: mod(func(c *Config) { c.Host = "   " }), nc: nc, wantErr: ErrConfig},
		{name: "unknown simulated type", cfg: mod(func(c *Config) { c.Source = SourceSimulated; c.SimGpus = []string{"1xVoodoo2"} }), nc: nc, wantErr: ErrUnknownGPUType},
		{name: "source with no GPUs", cfg: testConfig(), nc: nc, src: &fakeSource{n: 0, read: goodRead}, wantErr: ErrNoDevices},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []Option{WithLogger(zerolog.Nop())}
			if tc.src != nil {
				opts = append(opts, WithSource(tc.src))
			}
			_, err := New(tc.cfg, tc.nc, opts...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

// noDriverMsg starts the error of "auto" on a host without NVML: a missing
// driver, or a build without cgo.
var noDriverMsg = map[bool]string{true: "no NVIDIA driver (NVML init failed: ", false: "NVML support not built in"}[nvmlBuilt]

// TestSourceSelection runs where no NVIDIA driver is installed (CI, laptops);
// on a GPU host "auto" finds the driver and the test skips.
func TestSourceSelection(t *testing.T) {
	if src, err := openNVML(zerolog.Nop()); err == nil {
		_ = src.Close()
		t.Skip("this host has a working NVIDIA driver")
	}
	_, nc := natstest.Start(t)
	tests := []struct {
		name     string
		source   string
		simulate bool
		wantErr  []error
		wantMsg  string
		wantGPUs int
	}{
		{name: "auto without driver", source: SourceAuto, wantMsg: noDriverMsg},
		{name: "nvml without driver", source: SourceNVML, wantMsg: "GPU source nvml"},
		{name: "auto falls back when asked", source: SourceAuto, simulate: true, wantGPUs: 3},
		{name: "simulated", source: SourceSimulated, wantGPUs: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Source, cfg.Simulate = tc.source, tc.simulate
			cfg.SimGpus = []string{"2xH100-SXM5-80GB", "L40S"}
			svc, err := New(cfg, nc, WithLogger(zerolog.Nop()))
			if tc.wantGPUs == 0 {
				if err == nil {
					t.Fatal("no error without a driver")
				}
				if !errors.Is(err, ErrNVMLInit) && !errors.Is(err, ErrNVMLUnavailable) {
					t.Fatalf("err = %v, want ErrNVMLInit or ErrNVMLUnavailable", err)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("err = %v, want it to say %q", err, tc.wantMsg)
				}
				if tc.source == SourceAuto && !strings.Contains(err.Error(), "TELEMETRY_SOURCE=simulated, or serve --gpu-source simulated") {
					t.Fatalf("err = %v does not say how to simulate", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			if got := len(svc.workers); got != tc.wantGPUs {
				t.Fatalf("%d GPUs, want %d", got, tc.wantGPUs)
			}
			smp, err := svc.src.Sample(context.Background(), 2)
			if err != nil {
				t.Fatal(err)
			}
			if smp.Source != SourceSimulated || smp.Name != GPUTypes["L40S"].Name {
				t.Fatalf("sample %+v", smp)
			}
		})
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("NATS_URL", "nats://10.1.2.3:4222")
	t.Setenv("TELEMETRY_NATS_CREDS", "/etc/orch/telemetry.creds")
	t.Setenv("TELEMETRY_HOST", "gpu7")
	t.Setenv("TELEMETRY_INTERVAL", "2s")
	t.Setenv("TELEMETRY_SOURCE", "simulated")
	t.Setenv("TELEMETRY_READ_TIMEOUT", "250ms")
	t.Setenv("TELEMETRY_SIM_GPUS", "2xH100-SXM5-80GB,1xL40S")
	t.Setenv("TELEMETRY_SIM_SEED", "9")
	t.Setenv("TELEMETRY_SIM_FAIL_RATE", "0.1")
	t.Setenv("TELEMETRY_SIMULATE", "true")
	t.Setenv("TELEMETRY_METRICS_ADDR", "127.0.0.1:19104")
	var cfg Config
	if err := envconfig.Process("TELEMETRY", &cfg); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"NATS_URL", cfg.URL, "nats://10.1.2.3:4222"},
		{"TELEMETRY_NATS_CREDS", cfg.CredsFile, "/etc/orch/telemetry.creds"},
		{"NATS_CONNECT_TIMEOUT default", cfg.ConnectTimeout, 5 * time.Second},
		{"TELEMETRY_HOST", cfg.Host, "gpu7"},
		{"TELEMETRY_INTERVAL", cfg.Interval, 2 * time.Second},
		{"TELEMETRY_SOURCE", cfg.Source, SourceSimulated},
		{"TELEMETRY_READ_TIMEOUT", cfg.ReadTimeout, 250 * time.Millisecond},
		{"TELEMETRY_SIM_GPUS", strings.Join(cfg.SimGpus, ","), "2xH100-SXM5-80GB,1xL40S"},
		{"TELEMETRY_SIM_SEED", cfg.SimSeed, uint64(9)},
		{"TELEMETRY_SIM_FAIL_RATE", cfg.SimFailRate, 0.1},
		{"TELEMETRY_SIMULATE", cfg.Simulate, true},
		{"TELEMETRY_METRICS_ADDR", cfg.MetricsAddr, "127.0.0.1:19104"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Fatalf("got %v, want %v", c.got, c.want)
			}
		})
	}

}

func TestConfigDefaults(t *testing.T) {
	for _, k := range []string{"NATS_URL", "TELEMETRY_NATS_URL", "TELEMETRY_HOST", "TELEMETRY_INTERVAL", "TELEMETRY_SOURCE",
		"TELEMETRY_READ_TIMEOUT", "TELEMETRY_SIM_GPUS", "TELEMETRY_SIMULATE", "TELEMETRY_METRICS_ADDR"} {
		t.Setenv(k, "") // restores the variable after the test
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
	var d Config
	if err := envconfig.Process("TELEMETRY", &d); err != nil {
		t.Fatal(err)
	}
	if d.Interval != 5*time.Second || d.ReadTimeout != time.Second || d.Source != SourceAuto || d.Simulate || d.MetricsAddr != ":9104" ||
		d.URL != "nats://127.0.0.1:4222" || !slices.Equal(d.SimGpus, []string{"2xA100-SXM4-80GB"}) {
		t.Fatalf("defaults: %+v", d)
	}
}

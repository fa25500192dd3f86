package allinone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/client"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/eventlog"
)

// waitLimit bounds waits on the system; a safety net, not a speed assertion.
const waitLimit = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func nopLog(string) zerolog.Logger { return zerolog.Nop() }

// testConfig is serve's default on an embedded server in a temp dir, any
// free ports, simulated GPUs.
func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Port = -1
	cfg.DataDir = filepath.Join(dir, "nats")
	cfg.DatabaseURL = filepath.Join(dir, "selections.db")
	cfg.GPUSource = gputelemetry.SourceSimulated
	cfg.TelemetryInterval = time.Second
	cfg.MetricsAddr = "127.0.0.1:0"
	return cfg
}

func start(t *testing.T, cfg Config) *System {
	t.Helper()
	sys, err := Start(testCtx(t), cfg, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Shutdown(testCtx(t)); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return sys
}

// connect opens a quiet client connection.
func connect(t *testing.T, url string) (*nats.Conn, error) {
	nop := zerolog.Nop()
	return bus.Connect(testCtx(t), bus.ConnConfig{URL: url, Logger: &nop}, "test")
}

// rowCount waits until the SQLite store holds want rows and returns the count.
func rowCount(t *testing.T, path string, want int64) int64 {
	t.Helper()
	store, err := metricssink.OpenStore(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	deadline := time.Now().Add(waitLimit)
	for {
		n, err := store.Count(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestParseServices(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr error
	}{
		{"", AllServices, nil},
		{"all", AllServices, nil},
		{"registry,selector", []string{Registry, Selector}, nil},
		{" sink , telemetry ,sink", []string{Sink, Telemetry}, nil},
		{"registry,frontend", nil, ErrConfig},
		{",", nil, ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseServices(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("services = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSimulatedGPUSpecs(t *testing.T) {
	tests := []struct {
		n    int
		want []string
	}{
		{1, []string{"1xH100-SXM5-80GB"}},
		{3, []string{"1xH100-SXM5-80GB", "1xA100-SXM4-80GB", "1xL40S"}},
		{8, []string{"1xH100-SXM5-80GB", "1xA100-SXM4-80GB", "1xL40S", "1xA100-SXM4-40GB", "1xH200-SXM5-141GB", "1xRTX4090", "1xL4", "1xA10"}},
		{10, []string{"2xH100-SXM5-80GB", "2xA100-SXM4-80GB", "1xL40S", "1xA100-SXM4-40GB", "1xH200-SXM5-141GB", "1xRTX4090", "1xL4", "1xA10"}},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.n), func(t *testing.T) {
			got := SimulatedGPUSpecs(tc.n)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("specs = %v, want %v", got, tc.want)
			}
			// Every spec must be one gpu-telemetry knows.
			types, err := gputelemetry.ParseGPUSpecs(got)
			if err != nil || len(types) != tc.n {
				t.Fatalf("ParseGPUSpecs = %d GPUs, %v; want %d", len(types), err, tc.n)
			}
		})
	}
}

// TestServe starts everything on an embedded server: a selection through
// the Go client is placed on a (simulated) GPU and lands in SQLite.
func TestServe(t *testing.T) {
	cfg := testConfig(t)
	sys := start(t, cfg)
	info := sys.Info()
	if !info.Embedded || info.NATSURL == "" || info.GPUSource != gputelemetry.SourceSimulated || info.SimulatedGPUs != 8 ||
		info.DatabaseURL != cfg.DatabaseURL || !reflect.DeepEqual(info.Services, AllServices) || info.MetricsURL == "" {
		t.Fatalf("info = %+v", info)
	}

	nc, err := connect(t, info.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The embedded server shares the selector's process: its decision stream
	// is written in batches (bus.WithAsyncEventPersist).
	if m := eventPersistMode(t, nc); m != jetstream.AsyncPersistMode {
		t.Fatalf("%s persist mode %v, want async on the embedded server", bus.SelectionStream, m)
	}
	rep, err := client.New(nc).Select(testCtx(t), selection.Request{RequestID: "serve-1", TaskCategory: "code"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != selection.ModeGPUAware || rep.Degraded || rep.GPU == nil || rep.GPU.Host != info.TelemetryHost {
		t.Fatalf("reply not GPU-aware on the simulated host %s: mode %s degraded %v gpu %+v", info.TelemetryHost, rep.Mode, rep.Degraded, rep.GPU)
	}
	if n := rowCount(t, cfg.DatabaseURL, 1); n != 1 {
		t.Fatalf("%d rows in selection_metrics, want 1", n)
	}

	// One HTTP server for every service: readiness, metrics, the sink's dashboard.
	for _, tc := range []struct{ path, want string }{
		{"/readyz", `"serve":"ok"`},
		{"/readyz", `"selector":"ok"`},
		{"/metrics", "orch_selector_decisions_total"},
		{"/", "<html"},
		{"/api/stats", `"inserted"`},
	} {
		resp, err := http.Get(info.MetricsURL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.want) {
			t.Fatalf("GET %s = %d (%v), want 200 with %q:\n%.500s", tc.path, resp.StatusCode, err, tc.want, body)
		}
	}
	select {
	case <-sys.Failed():
		t.Fatalf("system failed: %v", sys.Err())
	default:
	}
}

// TestShutdownStoresEveryEvent stops the system right after a burst of
// selections: the selector flushes its events and the sink stores them all
// before NATS goes down, and a restart on the same data keeps the registry.
func TestShutdownStoresEveryEvent(t *testing.T) {
	cfg := testConfig(t)
	// Room for the burst: placements reserve memory until the next sample.
	cfg.SimulateGPUs = 16
	sys, err := Start(testCtx(t), cfg, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connect(t, sys.Info().NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(nc)
	const n = 30
	for i := range n {
		cat := []string{"code", "math", "chat"}[i%3]
		if _, err := c.Select(testCtx(t), selection.Request{RequestID: fmt.Sprint(i), TaskCategory: cat}); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	if err := sys.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := rowCount(t, cfg.DatabaseURL, 0); got != n {
		t.Fatalf("%d rows after shutdown, want %d", got, n)
	}

	// The same data dir again: nothing is lost, nothing reseeded over it.
	sys2 := start(t, cfg)
	nc2, err := connect(t, sys2.Info().NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js := natstest.JetStream(t, nc2)
	st, err := eventlog.Replay(testCtx(t), js, eventlog.Window{}, func(eventlog.Record) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != n || st.Undecodable != 0 {
		t.Fatalf("%d events (%d undecodable) in %s after restart, want %d", st.Delivered, st.Undecodable, bus.SelectionStream, n)
	}
}

func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := testConfig(t)
	cfg.Port = l.Addr().(*net.TCPAddr).Port
	_, err = Start(testCtx(t), cfg, nopLog)
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("err = %v, want ErrPortInUse", err)
	}
}

// Two serves on one data directory would write one JetStream store: the
// second is refused until the first has stopped.
func TestDataDirInUse(t *testing.T) {
	first := testConfig(t)
	sys, err := Start(testCtx(t), first, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	second := testConfig(t)
	second.DataDir = first.DataDir
	if _, err := Start(testCtx(t), second, nopLog); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second serve on %s: %v, want ErrDataDirInUse", first.DataDir, err)
	}
	if err := sys.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	start(t, second) // the lock went with the first
}

// Without a selector in this process, selectors elsewhere count an
// acknowledged event as stored: the embedded server keeps one write per event.
func TestEmbeddedWithoutSelectorKeepsEventWrites(t *testing.T) {
	cfg := testConfig(t)
	cfg.Services = []string{Registry, Sink}
	sys := start(t, cfg)
	nc, err := connect(t, sys.Info().NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if m := eventPersistMode(t, nc); m != jetstream.DefaultPersistMode {
		t.Fatalf("%s persist mode %v, want default without a selector in the process", bus.SelectionStream, m)
	}
	nc.Close()
	if err := sys.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}

	// Serve with a selector on the same data: the stream keeps its mode,
	// and the log says so.
	logs := &logtest.Buffer{}
	cfg.Services = AllServices
	sys, err = Start(testCtx(t), cfg, func(string) zerolog.Logger { return zerolog.New(logs) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(testCtx(t)) })
	nc, err = connect(t, sys.Info().NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if m := eventPersistMode(t, nc); m != jetstream.DefaultPersistMode {
		t.Fatalf("%s persist mode %v after serve with a selector, want the default it was made with", bus.SelectionStream, m)
	}
	if !strings.Contains(logs.String(), "the decision stream writes each event on its own") {
		t.Fatalf("no log line about the kept persist mode in:\n%s", logs.String())
	}
}

// eventPersistMode is the persist mode of the decision stream nc reaches.
func eventPersistMode(t *testing.T, nc *nats.Conn) jetstream.PersistModeType {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := js.Stream(testCtx(t), bus.SelectionStream)
	if err != nil {
		t.Fatal(err)
	}
	return events.CachedInfo().Config.PersistMode
}

// TestJoinWithSomeServices joins an existing NATS and runs only the
// registry and the selector: without telemetry the selection degrades.
func TestJoinWithSomeServices(t *testing.T) {
	s, _ := natstest.Start(t)
	cfg := testConfig(t)
	cfg.Embedded = false
	cfg.Conn = bus.ConnConfig{URL: s.ClientURL()}
	cfg.Services = []string{Registry, Selector}
	sys := start(t, cfg)
	info := sys.Info()
	if info.Embedded || info.GPUSource != "" || info.DatabaseURL != "" {
		t.Fatalf("info = %+v", info)
	}
	rep, err := client.New(natstest.Connect(t, s)).Select(testCtx(t), selection.Request{TaskCategory: "math"})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Degraded || rep.Mode != selection.ModeMultiCategory || rep.GPU != nil {
		t.Fatalf("reply without telemetry: mode %s degraded %v gpu %+v, want degraded multi_category", rep.Mode, rep.Degraded, rep.GPU)
	}
}

func TestConfigRefused(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{"unknown service", func(c *Config) { c.Services = []string{"frontend"} }},
		{"no data dir", func(c *Config) { c.DataDir = "" }},
		{"no simulated GPU", func(c *Config) { c.SimulateGPUs = 0 }},
		{"too many simulated GPUs", func(c *Config) { c.SimulateGPUs = MaxSimulatedGPUs + 1 }},
		{"no telemetry interval", func(c *Config) { c.TelemetryInterval = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.modify(&cfg)
			if _, err := Start(testCtx(t), cfg, nopLog); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

// While Start is still bringing services up, /readyz already answers (the
// services that started pass their checks) but says not ready: here the
// sink's PostgreSQL accepts connections and never answers, so Start waits
// until its timeout and then fails.
func TestNotReadyWhileStarting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		var held []net.Conn // open, never answered
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := probe.Addr().String()
	_ = probe.Close()
	cfg := testConfig(t)
	cfg.MetricsAddr = metricsAddr
	cfg.DatabaseURL = "postgres://sink:pw@" + ln.Addr().String() + "/orch?sslmode=disable"
	cfg.StartTimeout = 3 * time.Second
	done := make(chan error, 1)
	go func() {
		sys, err := Start(testCtx(t), cfg, nopLog)
		if err == nil {
			_ = sys.Shutdown(testCtx(t))
		}
		done <- err
	}()
	var body string
	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "starting: not every service runs yet") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said it was starting; last body %q", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; err == nil {
		t.Fatal("Start succeeded with a PostgreSQL that never answers")
	}
}

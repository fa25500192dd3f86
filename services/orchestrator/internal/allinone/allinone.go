// Package allinone composes the four services (registry, selector,
// metrics-sink, gpu-telemetry) in one process, each through its own New and
// Run, on an embedded NATS server or on an existing one, and stops them in
// the order that loses nothing: selections first, then the events' sink once
// it has stored everything, then NATS.
package allinone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
	"github.com/nlocalmodels/orchestrator/services/registry"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

// Names of the services, as --services lists them.
const (
	Registry  = "registry"
	Selector  = "selector"
	Sink      = "sink"
	Telemetry = "telemetry"
)

// metricsUnit names the HTTP server of /metrics, /healthz and /readyz.
const metricsUnit = "metrics"

// AllServices is every service, in start order.
var AllServices = []string{Registry, Telemetry, Sink, Selector}

// simTypes are the simulated GPU models, mixed so that placement has real
// choices to make; N simulated GPUs cycle through them.
var simTypes = []string{
	"H100-SXM5-80GB", "A100-SXM4-80GB", "L40S", "A100-SXM4-40GB",
	"H200-SXM5-141GB", "RTX4090", "L4", "A10",
}

// MaxSimulatedGPUs bounds the simulated GPUs of one process: one agent's.
const MaxSimulatedGPUs = gputelemetry.MaxSimulatedGPUs

// Config configures the composition.
type Config struct {
	// Embedded starts a NATS server in this process (JetStream, loopback);
	// otherwise Conn names the NATS to join.
	Embedded bool
	Conn     bus.ConnConfig
	// Host, Port and DataDir configure the embedded server (Port -1: any free one).
	Host    string
	Port    int
	DataDir string
	// Provision creates the streams and buckets at start.
	Provision bool
	// Services lists what to run; nil runs all of AllServices.
	Services []string
	// Seed imports the example registry into empty catalog buckets.
	Seed bool
	// DatabaseURL is the metrics-sink's store: a SQLite path or a postgres:// URL.
	DatabaseURL string
	// GPUSource is gpu-telemetry's source: auto (NVML, else simulated), nvml or simulated.
	GPUSource string
	// SimulateGPUs is how many GPUs to simulate when simulating (at most
	// MaxSimulatedGPUs).
	SimulateGPUs int
	// TelemetryHost names this machine in telemetry subjects; "" is the host name.
	TelemetryHost     string
	TelemetryInterval time.Duration
	// MetricsAddr serves /metrics, /healthz and /readyz for every service
	// here; "" serves none.
	MetricsAddr string
	// StartTimeout bounds startup; ShutdownTimeout bounds the ordered stop.
	StartTimeout    time.Duration
	ShutdownTimeout time.Duration
}

// DefaultConfig is `orchestrator serve` without flags.
func DefaultConfig() Config {
	return Config{
		Embedded:          true,
		Host:              "127.0.0.1",
		Port:              4222,
		DataDir:           filepath.Join("data", "nats"),
		Provision:         true,
		Seed:              true,
		DatabaseURL:       filepath.Join("data", "selections.db"),
		GPUSource:         gputelemetry.SourceAuto,
		SimulateGPUs:      8,
		TelemetryInterval: 5 * time.Second,
		MetricsAddr:       "127.0.0.1:9102",
		StartTimeout:      60 * time.Second,
		ShutdownTimeout:   30 * time.Second,
	}
}

// ParseServices reads a --services list ("registry,selector"; "all" or ""
// for every service).
func ParseServices(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" || strings.TrimSpace(list) == "all" {
		return slices.Clone(AllServices), nil
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(AllServices, s) {
			return nil, fmt.Errorf("%w: unknown service %q (known: %s)", ErrConfig, s, strings.Join(AllServices, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no service to run", ErrConfig)
	}
	return out, nil
}

// SimulatedGPUSpecs are the gpu-telemetry specs of n mixed simulated GPUs.
func SimulatedGPUSpecs(n int) []string {
	counts := make([]int, len(simTypes))
	for i := range n {
		counts[i%len(simTypes)]++
	}
	var specs []string
	for i, c := range counts {
		if c > 0 {
			specs = append(specs, strconv.Itoa(c)+"x"+simTypes[i])
		}
	}
	return specs
}

func (c *Config) validate() error {
	var problems []string
	for _, s := range c.Services {
		if !slices.Contains(AllServices, s) {
			problems = append(problems, fmt.Sprintf("unknown service %q (known: %s)", s, strings.Join(AllServices, ", ")))
		}
	}
	if c.Embedded && c.DataDir == "" {
		problems = append(problems, "the embedded NATS server needs a data directory")
	}
	if c.runs(Telemetry) {
		if (c.SimulateGPUs < 1 || c.SimulateGPUs > MaxSimulatedGPUs) && c.GPUSource != gputelemetry.SourceNVML {
			problems = append(problems, fmt.Sprintf("simulated GPUs: %d, want 1..%d", c.SimulateGPUs, MaxSimulatedGPUs))
		}
		if c.TelemetryInterval <= 0 {
			problems = append(problems, fmt.Sprintf("telemetry interval %s must be positive", c.TelemetryInterval))
		}
	}
	if c.StartTimeout <= 0 || c.ShutdownTimeout <= 0 {
		problems = append(problems, "start and shutdown timeouts must be positive")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

func (c *Config) runs(service string) bool {
	return c.Services == nil || slices.Contains(c.Services, service)
}

// Info says where everything is, for the banner.
type Info struct {
	NATSURL  string   `json:"nats_url"`
	Embedded bool     `json:"embedded"`
	DataDir  string   `json:"data_dir,omitempty"`
	Services []string `json:"services"`
	// DatabaseURL is the sink's store, "" when the sink does not run here.
	DatabaseURL string `json:"database_url,omitempty"`
	// GPUSource is the telemetry source the first sample reported (nvml or
	// simulated), "" when telemetry does not run here.
	GPUSource     string `json:"gpu_source,omitempty"`
	SimulatedGPUs int    `json:"simulated_gpus,omitempty"`
	TelemetryHost string `json:"telemetry_host,omitempty"`
	// MetricsURL serves /metrics, /healthz and /readyz; "" when off.
	MetricsURL string `json:"metrics_url,omitempty"`
	// DashboardURL is the metrics-sink's dashboard page, "" when off.
	DashboardURL string `json:"dashboard_url,omitempty"`
}

// unit is one running service.
type unit struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// System is the running composition.
type System struct {
	cfg    Config
	newLog func(service string) zerolog.Logger
	log    zerolog.Logger
	info   Info

	server *server.Server
	// releaseDataDir gives up the data directory's lock once server stopped.
	releaseDataDir func()
	httpd          *obs.Server
	nc             *nats.Conn // the composition's own connection
	conns          []*nats.Conn
	units          map[string]*unit
	store          metricssink.Store

	// started is set once Start brought every service up: /readyz says
	// not ready before, while the services that started first already pass.
	started  atomic.Bool
	stopping atomic.Bool
	failOnce sync.Once
	failed   chan struct{}
	failErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start brings the system up: NATS (embedded or joined), provisioning, then
// the registry (so that the selector warms on a seeded catalog), telemetry,
// the sink and the selector. It returns once the selector serves, or an
// error after undoing what it started. newLog gives each service its logger.
func Start(ctx context.Context, cfg Config, newLog func(service string) zerolog.Logger) (*System, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Services == nil {
		cfg.Services = slices.Clone(AllServices)
	}
	s := &System{cfg: cfg, newLog: newLog, log: newLog("orchestrator"), units: map[string]*unit{}, failed: make(chan struct{})}
	s.info = Info{Embedded: cfg.Embedded, Services: cfg.Services}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := s.start(ctx); err != nil {
		stopCtx, stop := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer stop()
		return nil, errors.Join(err, s.Shutdown(stopCtx))
	}
	s.started.Store(true)
	return s, nil
}

func (s *System) start(ctx context.Context) error {
	cfg := &s.cfg
	conn := cfg.Conn
	if cfg.Embedded {
		if err := s.startServer(); err != nil {
			return err
		}
		conn = bus.ConnConfig{URL: s.server.ClientURL()}
		s.info.NATSURL = s.server.ClientURL()
		s.info.DataDir = cfg.DataDir
	} else {
		s.info.NATSURL = bus.RedactURL(cfg.Conn.URL)
	}
	lg := s.log
	conn.Logger = &lg
	connect := func(name string) (*nats.Conn, error) {
		nc, err := bus.Connect(ctx, conn, "orchestrator/"+name)
		if err != nil {
			return nil, err
		}
		s.conns = append(s.conns, nc)
		return nc, nil
	}
	var err error
	if s.nc, err = connect("serve"); err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		s.httpd = obs.NewServer(cfg.MetricsAddr, obs.NewRegistry())
		if err := s.httpd.Listen(); err != nil {
			return fmt.Errorf("%w (pick another with --metrics-addr, or '' for none)", err)
		}
		s.info.MetricsURL = "http://" + s.httpd.Addr()
		s.httpd.AddCheck(startCheck, func() error {
			if !s.started.Load() {
				return fmt.Errorf("starting: not every service runs yet (%s)", strings.Join(s.cfg.Services, ", "))
			}
			return nil
		})
		s.launch(metricsUnit, s.httpd.Run)
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("%w: jetstream: %w", ErrStart, err)
	}
	if cfg.Provision {
		var opts []bus.ProvisionOption
		asyncEvents := cfg.Embedded && cfg.runs(Selector) // the server shares this process with the selector
		if asyncEvents {
			opts = append(opts, bus.WithAsyncEventPersist())
		}
		if err := bus.Provision(ctx, js, opts...); err != nil {
			return fmt.Errorf("%w (an account that may not create streams needs an admin to run `orchestrator provision`, then serve with --provision=false)", err)
		}
		if asyncEvents {
			s.noteEventPersist(ctx, js)
		}
	}

	if cfg.runs(Registry) {
		if err := s.startRegistry(ctx, connect); err != nil {
			return err
		}
	}
	if cfg.runs(Telemetry) {
		if err := s.startTelemetry(ctx, connect); err != nil {
			return err
		}
	}
	if cfg.runs(Sink) {
		if err := s.startSink(ctx, connect); err != nil {
			return err
		}
	}
	if cfg.runs(Selector) {
		nc, err := connect(Selector)
		if err != nil {
			return err
		}
		events, err := connect(Selector + "-events")
		if err != nil {
			return err
		}
		opts := []selector.Option{selector.WithLogger(s.newLog("selector")), selector.WithEventConn(events)}
		if s.httpd != nil {
			opts = append(opts, selector.WithMetrics(s.httpd.Registry()))
		}
		svc, err := selector.New(selector.DefaultConfig(), nc, opts...)
		if err != nil {
			return err
		}
		if s.httpd != nil {
			s.httpd.AddCheck(Selector, svc.Check)
		}
		u := s.launch(Selector, svc.Run)
		if err := s.await(ctx, u, svc.Ready()); err != nil {
			return err
		}
		// Ready comes as the endpoint is added: the flush makes sure the
		// server has its subscription before anyone is told to send requests.
		if err := nc.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("%w: selector: %w", ErrStart, err)
		}
	}
	return nil
}

// startCheck names the readiness check that passes once Start is done.
const startCheck = "serve"

// dataDirLockFile, in the data directory, is locked by the serve using it.
const dataDirLockFile = "serve.lock"

// startServer starts the embedded NATS, refusing a busy port up front with
// a hint rather than the server's bare listen error.
func (s *System) startServer() error {
	cfg := &s.cfg
	if cfg.Port > 0 {
		addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%w: %s is taken (another NATS or orchestrator serve?): pick another with --port, or join that NATS with NATS_URL=nats://%s", ErrPortInUse, addr, addr)
			}
			return fmt.Errorf("%w: listen on %s: %w", ErrStart, addr, err)
		}
		_ = l.Close() // only probing: the server listens itself
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("%w: data dir: %w", ErrStart, err)
	}
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: cfg.Host, Port: cfg.Port, DataDir: cfg.DataDir, ServerName: "orchestrator"})
	if err != nil {
		release()
		return err
	}
	s.server, s.releaseDataDir = srv, release
	s.log.Info().Str("url", srv.ClientURL()).Str("data_dir", cfg.DataDir).Msg("embedded NATS server started (JetStream, loopback only)")
	return nil
}

func (s *System) startRegistry(ctx context.Context, connect func(string) (*nats.Conn, error)) error {
	nc, err := connect(Registry)
	if err != nil {
		return err
	}
	// Provisioning is done once, above; the registry only seeds.
	rcfg := registry.Config{Provision: false}
	opts := []registry.Option{registry.WithLogger(s.newLog("registry"))}
	if s.httpd != nil {
		opts = append(opts, registry.WithMetrics(s.httpd.Registry()))
	}
	if s.cfg.Seed {
		opts = append(opts, registry.WithSeedData(exampledata.Registry, exampledata.Categories))
	}
	svc, err := registry.New(rcfg, nc, opts...)
	if err != nil {
		return err
	}
	u := s.launch(Registry, svc.Run)
	return s.await(ctx, u, svc.Ready())
}

func (s *System) startTelemetry(ctx context.Context, connect func(string) (*nats.Conn, error)) error {
	cfg := &s.cfg
	nc, err := connect(Telemetry)
	if err != nil {
		return err
	}
	readTimeout := min(time.Second, cfg.TelemetryInterval/2)
	tcfg := gputelemetry.Config{
		Host: cfg.TelemetryHost, Interval: cfg.TelemetryInterval, ReadTimeout: readTimeout,
		Source: cfg.GPUSource, Simulate: true, SimGpus: SimulatedGPUSpecs(cfg.SimulateGPUs),
	}
	topts := []gputelemetry.Option{gputelemetry.WithLogger(s.newLog("gpu-telemetry"))}
	if s.httpd != nil {
		topts = append(topts, gputelemetry.WithMetrics(s.httpd.Registry()))
	}
	svc, err := gputelemetry.New(tcfg, nc, topts...)
	if err != nil {
		return err
	}
	s.info.TelemetryHost = svc.Host()
	// The first sample tells which source auto chose; subscribe before it is sent.
	first := make(chan telemetry.Sample, 1)
	sub, err := s.nc.Subscribe(bus.TelemetrySubjectPrefix+svc.Host()+".>", func(m *nats.Msg) {
		var smp telemetry.Sample
		if json.Unmarshal(m.Data, &smp) == nil {
			select {
			case first <- smp:
			default:
			}
		}
	})
	if err != nil {
		return errors.Join(fmt.Errorf("%w: subscribe to telemetry: %w", ErrStart, err), svc.Close())
	}
	defer func() { _ = sub.Unsubscribe() }()
	u := s.launch(Telemetry, svc.Run)
	select {
	case smp := <-first:
		s.info.GPUSource = smp.Source
		if smp.Source == gputelemetry.SourceSimulated {
			s.info.SimulatedGPUs = cfg.SimulateGPUs
			s.log.Warn().Int("gpus", cfg.SimulateGPUs).Strs("types", tcfg.SimGpus).Str("host", svc.Host()).
				Msg("GPU telemetry is SIMULATED: no NVML found (or --gpu-source=simulated); placements are on pretend GPUs")
		} else {
			s.log.Info().Str("source", smp.Source).Str("host", svc.Host()).Msg("GPU telemetry from NVML")
		}
		return nil
	case <-u.done:
		return fmt.Errorf("%w: gpu-telemetry stopped at start: %w", ErrStart, u.err)
	case <-ctx.Done():
		return fmt.Errorf("%w: no GPU sample from gpu-telemetry: %w", ErrStart, ctx.Err())
	}
}

func (s *System) startSink(ctx context.Context, connect func(string) (*nats.Conn, error)) error {
	nc, err := connect(Sink)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("%w: jetstream: %w", ErrStart, err)
	}
	store, err := metricssink.OpenStore(ctx, s.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	s.store = store
	// Provisioning is done once, above (Provision is false in a Config built by hand).
	scfg := metricssink.Config{StatsInterval: sinkStatsInterval}
	opts := []metricssink.Option{metricssink.WithLogger(s.newLog("metrics-sink"))}
	if s.httpd != nil {
		opts = append(opts, metricssink.WithMetrics(s.httpd.Registry()))
	}
	svc, err := metricssink.New(scfg, js, store, opts...)
	if err != nil {
		return err
	}
	if s.httpd != nil {
		// The dashboard page and its API, and the sink's own readiness check.
		svc.Register(s.httpd)
		s.info.DashboardURL = s.info.MetricsURL + "/"
	}
	s.info.DatabaseURL = s.cfg.DatabaseURL
	u := s.launch(Sink, svc.Run)
	// The sink has no ready signal: it is ready once its endpoints answer.
	return s.awaitResponder(ctx, u, metricssink.SubjectStats)
}

// sinkStatsInterval is how often the sink logs its counters, as its own binary does.
const sinkStatsInterval = time.Minute

// responderPoll is how often awaitResponder asks again.
const responderPoll = 20 * time.Millisecond

// awaitResponder waits until something answers subject.
func (s *System) awaitResponder(ctx context.Context, u *unit, subject string) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := s.nc.RequestWithContext(rctx, subject, nil)
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %s: %w", ErrStart, subject, err)
		}
		select {
		case <-u.done:
			return fmt.Errorf("%w: %s stopped at start: %w", ErrStart, u.name, u.err)
		case <-ctx.Done():
			return fmt.Errorf("%w: %s not answering on %s: %w", ErrStart, u.name, subject, ctx.Err())
		case <-time.After(responderPoll):
		}
	}
}

// launch runs a service in its own goroutine with its own context, so that
// Shutdown can stop the services one by one. A service that stops on its
// own marks the system failed.
func (s *System) launch(name string, run func(context.Context) error) *unit {
	ctx, cancel := context.WithCancel(context.Background())
	u := &unit{name: name, cancel: cancel, done: make(chan struct{})}
	s.units[name] = u
	// The selector and the sink add their own, finer readiness checks.
	if s.httpd != nil && name != Selector && name != Sink {
		s.httpd.AddCheck(name, func() error {
			select {
			case <-u.done:
				return fmt.Errorf("%s has stopped", name)
			default:
				return nil
			}
		})
	}
	go func() {
		defer close(u.done)
		u.err = run(ctx)
		if s.stopping.Load() {
			return
		}
		err := u.err
		if err == nil {
			err = errors.New("returned without being asked to stop")
		}
		s.fail(fmt.Errorf("%w: %s: %w", ErrServiceStopped, name, err))
	}()
	return u
}

func (s *System) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		s.log.Error().Err(err).Msg("a service stopped; shutting down")
		close(s.failed)
	})
}

// await waits for a service to become ready.
func (s *System) await(ctx context.Context, u *unit, ready <-chan struct{}) error {
	select {
	case <-ready:
		return nil
	case <-u.done:
		return fmt.Errorf("%w: %s stopped at start: %w", ErrStart, u.name, u.err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %s not ready: %w", ErrStart, u.name, ctx.Err())
	}
}

// Info says where everything is.
func (s *System) Info() Info { return s.info }

// Failed is closed when a service stopped on its own; Err then says why.
func (s *System) Failed() <-chan struct{} { return s.failed }

// Err is why the system failed, nil while it has not.
func (s *System) Err() error {
	select {
	case <-s.failed:
		return s.failErr
	default:
		return nil
	}
}

// drainPoll is how often Shutdown looks whether the sink has caught up.
const drainPoll = 50 * time.Millisecond

// Shutdown stops everything, in order, within ctx: the selector (no new
// selections; it flushes its buffered events), telemetry, then the sink once
// its consumer has no event left to store, the registry, the connections,
// and the embedded NATS last. Past ctx's deadline what is left is closed
// hard and the error says what did not finish. Calling it again returns the
// first result.
func (s *System) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

func (s *System) shutdown(ctx context.Context) error {
	s.stopping.Store(true)
	var errs []error
	stop := func(name string) {
		u, ok := s.units[name]
		if !ok {
			return
		}
		u.cancel()
		select {
		case <-u.done:
			if u.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, u.err))
			}
			s.log.Info().Str("stopped", name).Msg("shutdown")
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%w: %s did not stop in time", ErrShutdown, name))
		}
	}
	stop(Selector)
	stop(Telemetry)
	if u, ok := s.units[Sink]; ok {
		if err := s.waitSinkDrained(ctx, u); err != nil {
			errs = append(errs, err)
		}
		stop(Sink)
	}
	stop(Registry)
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the sink's store: %w", err))
		}
	}
	for i := len(s.conns) - 1; i >= 0; i-- {
		timeout := time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl), 10*time.Millisecond)
		}
		if err := bus.Drain(s.conns[i], timeout); err != nil {
			errs = append(errs, err)
		}
	}
	if s.server != nil {
		s.server.Shutdown()
		s.server.WaitForShutdown()
		s.releaseDataDir()
		s.log.Info().Msg("embedded NATS server stopped")
	}
	stop(metricsUnit)
	return errors.Join(errs...)
}

// waitSinkDrained waits until the sink's durable consumer has stored and
// acknowledged every event, so that stopping it loses nothing to a
// redelivery after restart.
func (s *System) waitSinkDrained(ctx context.Context, u *unit) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		cons, err := js.Consumer(ctx, bus.SelectionStream, bus.SinkConsumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return nil
			}
		}
		select {
		case <-u.done:
			return nil // the sink is gone; nothing to wait for
		case <-ctx.Done():
			return fmt.Errorf("%w: the sink had not stored every event in time (%v)", ErrShutdown, err)
		case <-tick.C:
		}
	}
}

// noteEventPersist logs when the decision stream, made before serve made it
// in async persist mode, keeps writing each event on its own.
func (s *System) noteEventPersist(ctx context.Context, js jetstream.JetStream) {
	st, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		s.log.Warn().Err(err).Str("stream", bus.SelectionStream).Msg("cannot read the decision stream's persist mode")
		return
	}
	if mode := st.CachedInfo().Config.PersistMode; mode != jetstream.AsyncPersistMode {
		s.log.Info().Str("stream", bus.SelectionStream).Str("persist_mode", mode.String()).
			Msg("the decision stream writes each event on its own: it was made before serve made it in async persist mode, and NATS cannot change a stream's mode")
	}
}

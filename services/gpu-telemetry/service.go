package gputelemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Service samples every GPU of the host each Interval and publishes the
// samples to orch.telemetry.gpu.<host>.<index>.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	log     zerolog.Logger
	src     Source
	host    string
	workers []*worker

	registerer prometheus.Registerer
	metrics    *metrics
	// published counts samples handed to NATS; the first makes the agent ready.
	published atomic.Uint64
	closed    atomic.Bool

	// now and after are the clock; tests replace them to drive ticks.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	closeOnce sync.Once
	closeErr  error
}

// Option tunes New.
type Option func(*Service)

// WithLogger sets the service's logger (default: zerolog's global logger).
func WithLogger(l zerolog.Logger) Option { return func(s *Service) { s.log = l } }

// WithSource uses src instead of the one Config.Source names; the service
// closes it like its own.
func WithSource(src Source) Option { return func(s *Service) { s.src = src } }

// WithMetrics registers the agent's Prometheus collectors on reg
// (default: a private registry nobody scrapes).
func WithMetrics(reg prometheus.Registerer) Option { return func(s *Service) { s.registerer = reg } }

// worker is one GPU's sampling state, touched by one goroutine per tick.
type worker struct {
	index int
	// pending holds a read that overran ReadTimeout; no new read starts for
	// the GPU until it returns, so a hung driver call does not pile up.
	pending chan readResult
	// last is the latest sample read, to name the GPU in timeout markers.
	last telemetry.Sample
	// labels are the GPU's labels in the gauges, xid the last critical Xid
	// counted (see metrics.observe).
	labels []string
	xid    uint64
}

type readResult struct {
	smp telemetry.Sample
	err error
}

// New checks cfg and opens the GPU source (NVML is initialised here, once).
func New(cfg Config, nc *nats.Conn, opts ...Option) (*Service, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, nc: nc, log: log.Logger, now: time.Now, after: time.After}
	for _, o := range opts {
		o(s)
	}

	raw := cfg.Host
	if raw == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("%w: no TELEMETRY_HOST and os.Hostname failed: %w", ErrConfig, err)
		}
		raw = h
	}
	s.host = SanitizeHost(raw)
	if s.host == "" {
		return nil, fmt.Errorf("%w: host name %q is empty", ErrConfig, raw)
	}
	if s.host != raw {
		s.log.Warn().Str("host", raw).Str("subject_host", s.host).
			Msg("host name has characters a NATS subject token cannot hold: publishing under the sanitised name")
	}

	if s.src == nil {
		src, err := s.openSource()
		if err != nil {
			return nil, err
		}
		s.src = src
	}
	devices := s.src.Devices()
	if len(devices) == 0 {
		return nil, errors.Join(fmt.Errorf("%w on host %s", ErrNoDevices, s.host), s.Close())
	}
	for _, i := range devices {
		s.workers = append(s.workers, &worker{index: i})
	}
	if s.registerer == nil {
		s.registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(s, s.registerer)
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	s.metrics = m
	return s, nil
}

// simulateHint says how to run without a driver, in the agent and in serve.
const simulateHint = "to simulate GPUs, use the simulated source (TELEMETRY_SOURCE=simulated, or serve --gpu-source simulated)"

// openSource opens the source cfg.Source names.
func (s *Service) openSource() (Source, error) {
	switch s.cfg.Source {
	case SourceSimulated:
		return s.simulated()
	case SourceNVML:
		src, err := openNVML(s.log)
		if err != nil {
			return nil, fmt.Errorf("GPU source nvml (TELEMETRY_SOURCE, or serve --gpu-source): %w", err)
		}
		return src, nil
	default: // SourceAuto, checked by validate
		src, err := openNVML(s.log)
		if err == nil {
			return src, nil
		}
		if !s.cfg.Simulate {
			if errors.Is(err, ErrNVMLUnavailable) {
				return nil, fmt.Errorf("%w; %s", err, simulateHint)
			}
			return nil, fmt.Errorf("no NVIDIA driver (NVML init failed: %w); %s", err, simulateHint)
		}
		s.log.Warn().Err(err).Msg("no NVIDIA driver: simulating GPUs")
		return s.simulated()
	}
}

func (s *Service) simulated() (Source, error) {
	gpus, err := ParseGPUSpecs(s.cfg.SimGpus)
	if err != nil {
		return nil, fmt.Errorf("TELEMETRY_SIM_GPUS: %w", err)
	}
	seed := s.cfg.SimSeed
	if seed == 0 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(s.host)) // hash writes cannot fail
		seed = h.Sum64()
	}
	return NewSimulated(SimConfig{GPUs: gpus, Seed: seed, FailRate: s.cfg.SimFailRate, XidRate: s.cfg.SimXidRate})
}

// Check is the readiness probe: ready once a sample went out, until the
// GPU source is closed.
func (s *Service) Check() error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("%w: GPU source closed", ErrNotReady)
	case s.published.Load() == 0:
		return fmt.Errorf("%w: no GPU sample published yet", ErrNotReady)
	}
	if err := bus.Connected(s.nc); err != nil { // samples are only buffered meanwhile
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}

// Host is the host name used in subjects and samples (sanitised).
func (s *Service) Host() string { return s.host }

// Run samples and publishes until ctx ends, then closes the source. Ticks
// fall at start + k*Interval; a tick missed because the host was stalled is
// skipped (and logged), never made up in a burst. It returns nil when ctx
// ends and an error wrapping ErrPublish if the connection closed under it.
func (s *Service) Run(ctx context.Context) error {
	defer func() {
		if err := s.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing GPU source")
		}
	}()
	s.log.Info().Str("host", s.host).Int("gpus", len(s.workers)).Dur("interval", s.cfg.Interval).
		Dur("read_timeout", s.cfg.ReadTimeout).Msg("publishing GPU telemetry")

	start := s.now()
	var k int64
	for {
		if err := s.tick(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		next, at, skipped := nextTick(start, s.cfg.Interval, s.now(), k)
		if skipped > 0 {
			s.log.Warn().Int64("skipped", skipped).Msg("sampling fell behind the interval: ticks skipped")
		}
		k = next
		select {
		case <-ctx.Done():
			return nil
		case <-s.after(at.Sub(s.now())):
		}
	}
}

// nextTick returns the index and time of the first tick after now, and how
// many ticks after last were missed. Ticks are start + k*interval.
func nextTick(start time.Time, interval time.Duration, now time.Time, last int64) (next int64, at time.Time, skipped int64) {
	next = int64(now.Sub(start)/interval) + 1
	if next <= last {
		next = last + 1
	}
	return next, start.Add(time.Duration(next) * interval), next - last - 1
}

// tick samples every GPU at once and publishes each sample as soon as it is
// read; it returns within ReadTimeout.
func (s *Service) tick(ctx context.Context) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fatal error
	)
	for _, w := range s.workers {
		wg.Go(func() {
			if err := s.sampleDevice(ctx, w); err != nil {
				mu.Lock()
				fatal = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return fatal
}

func (s *Service) sampleDevice(ctx context.Context, w *worker) error {
	if w.pending != nil {
		select {
		case <-w.pending: // the hung read came back; its sample is stale, read anew
			w.pending = nil
		default:
			return s.publish(w, s.marker(w, telemetry.ReadTimeout, "GPU read still running from an earlier tick"))
		}
	}
	res := make(chan readResult, 1)
	go func() {
		start := time.Now() // not s.now: tests stop that clock
		smp, err := s.src.Sample(ctx, w.index)
		s.metrics.observeRead(time.Since(start))
		res <- readResult{smp, err}
	}()
	timer := time.NewTimer(s.cfg.ReadTimeout)
	defer timer.Stop()
	select {
	case r := <-res:
		if r.err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn().Err(r.err).Int("gpu", w.index).Msg("GPU read failed")
			return s.publish(w, s.marker(w, telemetry.ReadSample, r.err.Error()))
		}
		w.last = r.smp
		return s.publish(w, r.smp)
	case <-timer.C:
		w.pending = res
		s.log.Warn().Int("gpu", w.index).Dur("timeout", s.cfg.ReadTimeout).Msg("GPU read timed out")
		return s.publish(w, s.marker(w, telemetry.ReadTimeout, fmt.Sprintf("read timed out after %s", s.cfg.ReadTimeout)))
	case <-ctx.Done():
		w.pending = res
		return nil
	}
}

// marker is the sample published when a GPU could not be read this tick: it
// names the GPU from its last sample and is unhealthy, so the selector
// leaves the GPU alone until a good read.
func (s *Service) marker(w *worker, failed, reason string) telemetry.Sample {
	return telemetry.Sample{
		Index:         w.index,
		UUID:          w.last.UUID,
		Name:          w.last.Name,
		Source:        s.src.Kind(),
		Timestamp:     s.now().UTC(),
		MemoryTotalMB: w.last.MemoryTotalMB,
		PowerLimitW:   w.last.PowerLimitW,
		Healthy:       false,
		HealthReason:  reason,
		LastXid:       w.last.LastXid,
		FailedReads:   []string{failed},
	}
}

func (s *Service) publish(w *worker, smp telemetry.Sample) error {
	smp.Host = s.host
	smp.Index = w.index
	data, err := json.Marshal(smp)
	if err != nil {
		// Only a NaN or Inf reading gets here; drop this sample, not the agent.
		s.log.Error().Err(err).Int("gpu", w.index).Msg("cannot encode GPU sample")
		s.metrics.publishErrors.Inc()
		return nil
	}
	s.metrics.observe(w, smp)
	subject := bus.TelemetrySubject(s.host, w.index)
	if err := s.nc.Publish(subject, data); err != nil {
		s.metrics.publishErrors.Inc()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("%w to %s: %w", ErrPublish, subject, err)
		}
		// Reconnecting buffers; anything else is logged and the next tick retries.
		s.log.Warn().Err(err).Str("subject", subject).Msg("publishing GPU sample failed")
		return nil
	}
	s.published.Add(1)
	return nil
}

// Close closes the GPU source (NVML shutdown). Run calls it on return.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.src != nil {
			s.closeErr = s.src.Close()
		}
	})
	return s.closeErr
}

package metricssink

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// States of the telemetry feed, GPUView.Telemetry.
const (
	TelemetryStarting    = "starting"
	TelemetryLive        = "live"
	TelemetryUnavailable = "unavailable"
)

// GPUView is the dashboard's fleet: the latest sample of every GPU seen on
// the telemetry stream, as of Time.
type GPUView struct {
	Time         time.Time `json:"time"`
	StaleAfterMs float64   `json:"stale_after_ms"`
	// Telemetry is TelemetryStarting, TelemetryLive or TelemetryUnavailable
	// (then Error says why; the sink retries).
	Telemetry string      `json:"telemetry"`
	Error     string      `json:"error,omitempty"`
	GPUs      []GPUStatus `json:"gpus"`
}

// GPUStatus is one GPU's latest sample with its age; Stale is true when the
// age exceeds the sink's StaleAfter (the selector would not place on it).
type GPUStatus struct {
	// Key is "<host>/<index>".
	Key string `json:"key"`
	telemetry.Sample
	AgeMs float64 `json:"age_ms"`
	Stale bool    `json:"stale"`
}

// fleet keeps the telemetry cache and the state of the feed that fills it.
type fleet struct {
	cache *telemetry.Cache
	mu    sync.Mutex
	state string
	err   error
}

func (f *fleet) set(state string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.err = state, err
}

// put stores a sample; a sample arriving means the feed is live.
func (f *fleet) put(smp telemetry.Sample) {
	f.cache.Put(smp)
	f.set(TelemetryLive, nil)
}

// view returns the fleet at now, GPUs ordered by key.
func (f *fleet) view(now time.Time, staleAfter time.Duration) GPUView {
	f.mu.Lock()
	v := GPUView{Time: now.UTC(), StaleAfterMs: ms(staleAfter), Telemetry: f.state}
	if f.err != nil {
		v.Error = f.err.Error()
	}
	f.mu.Unlock()
	samples, _ := f.cache.Samples()
	v.GPUs = make([]GPUStatus, len(samples))
	for i, smp := range samples {
		v.GPUs[i] = GPUStatus{Key: smp.Key(), Sample: smp, AgeMs: ms(smp.Age(now)), Stale: smp.Stale(now, staleAfter)}
	}
	return v
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// GPUs returns the latest sample of every GPU the sink has seen, with its
// staleness at now.
func (s *Service) GPUs(now time.Time) GPUView { return s.fleet.view(now, s.cfg.StaleAfter) }

// watchTelemetry reads the telemetry stream into the fleet as the selector
// does (the last sample per GPU subject, then live ones) until ctx ends. The
// GPU view is the dashboard's only: when the stream cannot be read (not
// provisioned yet, no permission) the sink keeps storing decisions, the view
// says why, and the consumer is retried with backoff.
func (s *Service) watchTelemetry(ctx context.Context) {
	backoff := retryMin
	for {
		cc, err := s.consumeTelemetry(ctx)
		if err == nil {
			s.fleet.set(TelemetryLive, nil)
			<-ctx.Done()
			cc.Stop()
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.fleet.set(TelemetryUnavailable, err)
		s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("no GPU view on the dashboard")
		s.sleep(ctx, backoff)
		if ctx.Err() != nil {
			return
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// consumeTelemetry starts an ordered consumer on the GPU sample subjects:
// ephemeral, so any number of sinks (and selectors) read the stream at once.
func (s *Service) consumeTelemetry(ctx context.Context) (jetstream.ConsumeContext, error) {
	cons, err := s.js.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.TelemetryWildcard},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTelemetry, bus.TelemetryStream, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var smp telemetry.Sample
		if err := json.Unmarshal(msg.Data(), &smp); err != nil {
			s.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("ignoring undecodable GPU sample")
			return
		}
		s.fleet.put(smp)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself; until a sample arrives again
		// the view says the feed broke, and why.
		s.fleet.set(TelemetryUnavailable, fmt.Errorf("%w: %s: %w", ErrTelemetry, bus.TelemetryStream, err))
		s.log.Warn().Err(err).Msg("telemetry feed interrupted; resuming")
	}))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTelemetry, bus.TelemetryStream, err)
	}
	return cc, nil
}

package metricssink

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
)

// checkTimeout bounds the database read of one readiness check.
const checkTimeout = 2 * time.Second

// registerMetrics exports Stats as orch_sink_* metrics. Each reads the
// counters at scrape time, so nothing is counted twice.
func (s *Service) registerMetrics() error {
	counter := func(name, help string, v func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "sink", Name: name, Help: help},
			func() float64 { return float64(v(s.Stats())) })
	}
	gauge := func(name, help string, v func(Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: obs.Namespace, Subsystem: "sink", Name: name, Help: help},
			func() float64 { return v(s.Stats()) })
	}
	collectors := []prometheus.Collector{
		counter("rows_inserted_total", "Decision rows written to selection_metrics.",
			func(st Stats) uint64 { return st.Inserted }),
		counter("duplicates_total", "Decision events already stored (redeliveries, republished events) and skipped.",
			func(st Stats) uint64 { return st.Duplicates }),
		counter("poison_total", "Decision events skipped because they are no storable selection-event (a message holding none is terminated).",
			func(st Stats) uint64 { return st.Poison }),
		counter("batches_total", "Batches committed, one transaction each.",
			func(st Stats) uint64 { return st.Batches }),
		counter("store_errors_total", "Batches the database failed to commit (naked and retried).",
			func(st Stats) uint64 { return st.StoreErrors }),
		counter("fetch_errors_total", "Failed pulls from the durable consumer.",
			func(st Stats) uint64 { return st.FetchErrors }),
		gauge("ingest_rows_per_second", "Rows inserted per second over the rate window (SINK_RATE_WINDOW).",
			func(st Stats) float64 { return st.IngestRate }),
		gauge("consumer_lag", "Decision messages (one or more events each) in the stream not yet delivered to the sink (consumer pending).",
			func(st Stats) float64 { return float64(st.ConsumerLag) }),
		gauge("ack_pending", "Decision messages delivered to the sink and not yet acknowledged.",
			func(st Stats) float64 { return float64(st.AckPending) }),
	}
	if rb, ok := s.store.(interface{ RowByRowBatches() uint64 }); ok {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: obs.Namespace, Subsystem: "sink", Name: "row_by_row_batches_total",
			Help: "PostgreSQL batches COPY could not take whole (an event already stored, or a value the server refuses), written again row by row.",
		}, func() float64 { return float64(rb.RowByRowBatches()) }))
	}
	for _, c := range collectors {
		if err := s.registerer.Register(c); err != nil {
			return fmt.Errorf("%w: register metrics: %w", ErrConfig, err)
		}
	}
	return nil
}

// Check is the readiness check for /readyz: Run holds the durable consumer
// and the database answers.
func (s *Service) Check() error {
	if !s.consuming.Load() {
		return fmt.Errorf("%w: no consumer %s on %s (Run has not started it, or has stopped)", ErrNotReady, bus.SinkConsumer, bus.SelectionStream)
	}
	if err := bus.Connected(s.js.Conn()); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	if f := s.fetchFailing.Load(); f != nil && time.Since(f.since) > s.fetchFailingFor() {
		return fmt.Errorf("%w: cannot read consumer %s on %s for %s: %w", ErrNotReady, bus.SinkConsumer, bus.SelectionStream,
			time.Since(f.since).Round(time.Second), f.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}

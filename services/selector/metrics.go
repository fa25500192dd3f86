package selector

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
)

// Decision outcomes, the "outcome" label of orch_selector_decisions_total.
const (
	outcomeSelected        = "selected"
	outcomeDegraded        = "degraded"
	outcomeBadRequest      = "bad_request"
	outcomeUnknownCategory = "unknown_category"
	outcomeNoCandidate     = "no_candidate"
	outcomeNotReady        = "not_ready"
	outcomeError           = "error"
)

var outcomeOfCode = map[string]string{
	bus.CodeBadRequest: outcomeBadRequest, bus.CodeNotFound: outcomeUnknownCategory,
	bus.CodeUnprocessable: outcomeNoCandidate, bus.CodeNotReady: outcomeNotReady, bus.CodeInternal: outcomeError,
}

type metrics struct {
	decisions *prometheus.CounterVec
	duration  prometheus.Histogram
}

// newMetrics registers the selector's collectors on reg.
func newMetrics(s *Service, reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: obs.Namespace, Subsystem: "selector", Name: "decisions_total",
			Help: "Selections answered, by task category, chosen model, mode and outcome (selected, degraded, bad_request, unknown_category, no_candidate, not_ready, error).",
		}, []string{"category", "model", "mode", "outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: obs.Namespace, Subsystem: "selector", Name: "decision_duration_seconds",
			Help:    "Time from receiving a selection request to sending its reply.",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1},
		}),
	}
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "selector", Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	reg.MustRegister(m.decisions, m.duration,
		counter("events_published_total", "Decision events acknowledged by the stream.", s.events.published.Load),
		counter("events_retried_total", "Decision event messages (one or more events each) sent again after a failed publish.", s.events.retried.Load),
		counter("events_dropped_total", "Decision events dropped because the buffer was full.", s.events.dropped.Load),
		counter("events_failed_total", "Decision events given up after every retry.", s.events.failed.Load),
		counter("placements_reselected_total", "Placements selected again because the chosen GPU's reservations changed after the selection read them.", s.reselections.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: obs.Namespace, Subsystem: "selector", Name: "events_buffered",
			Help: "Decision events waiting to be published."}, func() float64 { return float64(len(s.events.queue)) }),
		&sampleAgeCollector{s: s, desc: prometheus.NewDesc(obs.Namespace+"_gpu_sample_age_seconds",
			"Age of the latest sample of each GPU as the selector sees it; above stale_after the GPU is not placed on.",
			[]string{"host", "index", "gpu"}, nil)},
	)
	return m
}

// observe records one answered request.
func (m *metrics) observe(start time.Time, category, model, mode, outcome string) {
	m.decisions.WithLabelValues(category, model, mode, outcome).Inc()
	m.duration.Observe(time.Since(start).Seconds())
}

// sampleAgeCollector reads the telemetry cache at scrape time.
type sampleAgeCollector struct {
	s    *Service
	desc *prometheus.Desc
}

func (c *sampleAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sampleAgeCollector) Collect(ch chan<- prometheus.Metric) {
	samples, _ := c.s.cache.Samples()
	now := c.s.now()
	for _, smp := range samples {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, smp.Age(now).Seconds(),
			smp.Host, strconv.Itoa(smp.Index), smp.UUID)
	}
}

package gputelemetry

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/obs"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// metrics are the agent's Prometheus collectors. The per-GPU gauges follow
// the samples the agent publishes, so simulated GPUs show as real ones do.
type metrics struct {
	utilization, memUsed, memTotal, temperature, power, powerLimit, healthy *prometheus.GaugeVec
	xids, readFailures                                                      *prometheus.CounterVec
	publishErrors                                                           prometheus.Counter
	readDuration                                                            prometheus.Histogram
}

// gpuLabels name one GPU in the per-GPU gauges; "gpu" is its UUID, as in
// the selector's orch_gpu_sample_age_seconds.
var gpuLabels = []string{"host", "index", "gpu", "name"}

func newMetrics(s *Service, reg prometheus.Registerer) (*metrics, error) {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: obs.Namespace, Subsystem: "gpu", Name: name, Help: help}, gpuLabels)
	}
	m := &metrics{
		utilization: gauge("utilization_ratio", "GPU utilisation, 0..1 (nvidia-smi utilization.gpu / 100)."),
		memUsed:     gauge("memory_used_bytes", "GPU memory in use."),
		memTotal:    gauge("memory_total_bytes", "GPU memory in all."),
		temperature: gauge("temperature_celsius", "GPU core temperature."),
		power:       gauge("power_watts", "GPU power draw."),
		powerLimit:  gauge("power_limit_watts", "GPU enforced power limit."),
		healthy:     gauge("healthy", "1 when the GPU may receive work, 0 after a critical Xid, a lost GPU or a failed read."),
		xids: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "gpu", Name: "xid_errors_total",
			Help: "Critical Xid errors seen on each GPU, by Xid number."}, []string{"host", "index", "gpu", "xid"}),
		readFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "telemetry", Name: "read_failures_total",
			Help: "GPU reads that failed, by the read (memory, temperature, ..., timeout for a read that overran, sample for a GPU that could not be read at all)."},
			[]string{"host", "index", "read"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "telemetry", Name: "publish_errors_total",
			Help: "GPU samples that could not be encoded or published."}),
		readDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: obs.Namespace, Subsystem: "telemetry", Name: "sample_duration_seconds",
			Help:    "Time one GPU read took, a read that overran the read timeout included (observed when it returns).",
			Buckets: []float64{1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}}),
	}
	published := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: obs.Namespace, Subsystem: "telemetry", Name: "samples_published_total",
		Help: "GPU samples handed to NATS."}, func() float64 { return float64(s.published.Load()) })
	if err := register(reg, m.utilization, m.memUsed, m.memTotal, m.temperature, m.power, m.powerLimit, m.healthy,
		m.xids, m.readFailures, m.publishErrors, m.readDuration, published); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers every collector or, when one is refused (e.g. a second
// agent on the same registry), none.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("%w: metrics: %w", ErrConfig, err)
		}
	}
	return nil
}

// gauges are the per-GPU gauges.
func (m *metrics) gauges() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.utilization, m.memUsed, m.memTotal, m.temperature, m.power, m.powerLimit, m.healthy}
}

// observe records one sample of w's GPU; only w's goroutine calls it.
func (m *metrics) observe(w *worker, smp telemetry.Sample) {
	index := strconv.Itoa(smp.Index)
	labels := []string{smp.Host, index, smp.UUID, smp.Name}
	if w.labels != nil && !slices.Equal(w.labels, labels) {
		// The GPU's UUID or name became known: its old series would linger.
		for _, g := range m.gauges() {
			g.DeleteLabelValues(w.labels...)
		}
	}
	w.labels = labels

	// A handle, sample or timeout failure means nothing was read.
	nothingRead := slices.ContainsFunc(smp.FailedReads, func(r string) bool {
		return r == telemetry.ReadHandle || r == telemetry.ReadSample || r == telemetry.ReadTimeout
	})
	// A failed read removes its gauges' series rather than report the zero
	// the sample carries in its place.
	for _, r := range []struct {
		read string
		g    *prometheus.GaugeVec
		v    float64
	}{
		{telemetry.ReadUtilization, m.utilization, smp.UtilizationGPUPct / 100},
		{telemetry.ReadMemory, m.memUsed, float64(smp.MemoryUsedMB) * bytesPerMB},
		{telemetry.ReadMemory, m.memTotal, float64(smp.MemoryTotalMB) * bytesPerMB},
		{telemetry.ReadTemperature, m.temperature, smp.TemperatureC},
		{telemetry.ReadPower, m.power, smp.PowerW},
		{telemetry.ReadPowerLimit, m.powerLimit, smp.PowerLimitW},
	} {
		if nothingRead || slices.Contains(smp.FailedReads, r.read) {
			r.g.DeleteLabelValues(labels...)
		} else {
			r.g.WithLabelValues(labels...).Set(r.v)
		}
	}
	healthy := 0.0
	if smp.Healthy {
		healthy = 1
	}
	m.healthy.WithLabelValues(labels...).Set(healthy)

	for _, read := range smp.FailedReads {
		m.readFailures.WithLabelValues(smp.Host, index, read).Inc()
	}
	// Sources repeat a GPU's last critical Xid in every later sample: count
	// it when it first shows.
	if smp.LastXid != 0 && smp.LastXid != w.xid {
		w.xid = smp.LastXid
		m.xids.WithLabelValues(smp.Host, index, smp.UUID, strconv.FormatUint(smp.LastXid, 10)).Inc()
	}
}

// observeRead records how long one GPU read took.
func (m *metrics) observeRead(d time.Duration) { m.readDuration.Observe(d.Seconds()) }

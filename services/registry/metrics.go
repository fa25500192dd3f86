package registry

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
)

// Write kinds: the "kind" label of orch_registry_writes_total and
// orch_registry_rejections_total, one per write endpoint.
const (
	kindModelPut       = "model_put"
	kindModelDelete    = "model_delete"
	kindCategoryPut    = "category_put"
	kindCategoryDelete = "category_delete"
	kindWeightSet      = "weight_set"
	kindConfigPut      = "config_put"
	kindConfigPatch    = "config_patch"
	kindImport         = "import"
)

var writeKinds = []string{kindModelPut, kindModelDelete, kindCategoryPut, kindCategoryDelete,
	kindWeightSet, kindConfigPut, kindConfigPatch, kindImport}

// rejectionCodes are the codes of a refused write, the "code" label.
var rejectionCodes = [...]string{bus.CodeBadRequest, bus.CodeNotFound, bus.CodeUnprocessable}

// writeCounts counts the answers to one kind of write. They are the only
// count: Stats adds them up and the collector reads them.
type writeCounts struct {
	done     atomic.Uint64
	rejected [len(rejectionCodes)]atomic.Uint64 // by index in rejectionCodes
}

func newWriteCounts() map[string]*writeCounts {
	m := make(map[string]*writeCounts, len(writeKinds))
	for _, k := range writeKinds {
		m[k] = &writeCounts{}
	}
	return m
}

// WithMetrics registers the registry's Prometheus collectors on reg
// (default: a private registry nobody scrapes).
func WithMetrics(reg prometheus.Registerer) Option { return func(s *Service) { s.registerer = reg } }

// collector reads the service's counters at scrape time.
type collector struct {
	s                                                           *Service
	writes, rejections, failures, conflicts, models, categories *prometheus.Desc
}

func newCollector(s *Service) *collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(obs.Namespace, "registry", name), help, labels, nil)
	}
	return &collector{
		s: s,
		writes: desc("writes_total", "Write requests done (a write that changed nothing counts too), by kind: "+
			"model_put, model_delete, category_put, category_delete, weight_set, config_put, config_patch, import.", "kind"),
		rejections: desc("rejections_total", "Write requests refused, by kind and micro error code (400 bad request, 404 not found, 422 breaks the catalog or config rules).", "kind", "code"),
		failures:   desc("write_failures_total", "Write requests that could not be done: buckets unavailable, conflicts, bugs."),
		conflicts:  desc("write_conflicts_total", "Writes that found a key changed by another writer and started over."),
		models:     desc("models", "Models in the orch_models bucket, as this replica's watch sees it."),
		categories: desc("categories", "Task categories in the orch_categories bucket, as this replica's watch sees it."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.writes, c.rejections, c.failures, c.conflicts, c.models, c.categories} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, kind := range writeKinds {
		n := c.s.counts[kind]
		ch <- prometheus.MustNewConstMetric(c.writes, prometheus.CounterValue, float64(n.done.Load()), kind)
		for i, code := range rejectionCodes {
			ch <- prometheus.MustNewConstMetric(c.rejections, prometheus.CounterValue, float64(n.rejected[i].Load()), kind, code)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(c.s.failures.Load()))
	ch <- prometheus.MustNewConstMetric(c.conflicts, prometheus.CounterValue, float64(c.s.conflicts.Load()))
	// A count not known yet (before Run, or with the watch lost) is left out, not 0.
	for _, g := range []struct {
		desc *prometheus.Desc
		n    int64
	}{{c.models, c.s.modelCount.Load()}, {c.categories, c.s.categoryCount.Load()}} {
		if g.n >= 0 {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(g.n))
		}
	}
}

// register registers the collector on the chosen registry.
func (s *Service) register() error {
	if s.registerer == nil {
		s.registerer = prometheus.NewRegistry()
	}
	if err := s.registerer.Register(newCollector(s)); err != nil {
		return fmt.Errorf("%w: metrics: %w", ErrConfig, err)
	}
	return nil
}

// countKeys keeps n at the number of keys in kv (skip apart) until ctx
// ends. It watches the bucket, so it sees every replica's writes; n stays
// -1 (unknown) until the keys present at the start are counted.
func (s *Service) countKeys(ctx context.Context, kv jetstream.KeyValue, n *atomic.Int64, skip string) {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		s.log.Warn().Err(err).Str("bucket", kv.Bucket()).Msg("cannot watch bucket: its key count is not exported")
		return
	}
	defer func() { _ = w.Stop() }()
	keys := map[string]struct{}{}
	loaded := false
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				n.Store(-1)
				s.log.Warn().Str("bucket", kv.Bucket()).Msg("bucket watch ended: its key count is not exported")
				return
			case e == nil: // the keys present at the start are all delivered
				loaded = true
			case e.Key() == skip:
				continue
			case e.Operation() == jetstream.KeyValuePut:
				keys[e.Key()] = struct{}{}
			default: // delete or purge
				delete(keys, e.Key())
			}
			if loaded {
				n.Store(int64(len(keys)))
			}
		}
	}
}

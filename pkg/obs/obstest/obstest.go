// Package obstest reads Prometheus registries in tests.
package obstest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Scrape gathers reg as series -> value, each series keyed as Series names
// it; a histogram gives its sample count as the series name_count.
func Scrape(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				out[Series(mf.GetName(), labels)] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[Series(mf.GetName(), labels)] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[Series(mf.GetName()+"_count", labels)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// Series names one series as Prometheus writes it: name alone, or
// name{k="v",...} with the labels sorted by name.
func Series(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

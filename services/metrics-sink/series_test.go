package metricssink

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/events"
)

func TestSeriesEnding(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 35, 123456789, time.UTC)
	tests := []struct {
		name         string
		window, step time.Duration
		from         time.Time
		buckets      int
		err          error
	}{
		{"default view", 15 * time.Minute, 30 * time.Second, time.Date(2026, 1, 2, 2, 50, 0, 0, time.UTC), 30, nil},
		{"window not a multiple of the step rounds up", 100 * time.Second, 30 * time.Second, time.Date(2026, 1, 2, 3, 3, 0, 0, time.UTC), 4, nil},
		{"one bucket", time.Second, time.Second, time.Date(2026, 1, 2, 3, 4, 35, 0, time.UTC), 1, nil},
		{"the most buckets", 24 * time.Hour, time.Minute, time.Date(2026, 1, 1, 3, 5, 0, 0, time.UTC), MaxSeriesBuckets, nil},
		{"too many buckets", 24 * time.Hour, 30 * time.Second, time.Time{}, 0, ErrBadSeries},
		{"step below a second", time.Minute, 500 * time.Millisecond, time.Time{}, 0, ErrBadSeries},
		{"step not whole seconds", time.Minute, 1500 * time.Millisecond, time.Time{}, 0, ErrBadSeries},
		{"zero step", time.Minute, 0, time.Time{}, 0, ErrBadSeries},
		{"ten years in few buckets", 87600 * time.Hour, 61 * time.Hour, time.Time{}, 0, ErrBadSeries},
		{"the longest window", MaxSeriesWindow, 24 * time.Hour, time.Date(2025, 12, 3, 0, 0, 0, 0, time.UTC), 31, nil},
		{"window shorter than the step", time.Second, time.Minute, time.Time{}, 0, ErrBadSeries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := SeriesEnding(now, tt.window, tt.step)
			if !errors.Is(err, tt.err) {
				t.Fatalf("SeriesEnding error %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if !q.From.Equal(tt.from) || q.Buckets != tt.buckets || q.Step != tt.step {
				t.Fatalf("query from %s, %d buckets of %s; want from %s, %d buckets", q.From, q.Buckets, q.Step, tt.from, tt.buckets)
			}
			if !q.To().After(now) || q.To().Add(-q.Step).After(now) {
				t.Fatalf("the last bucket [%s, %s) does not hold now %s", q.To().Add(-q.Step), q.To(), now)
			}
		})
	}
}

// nearestRank is the reference percentile: the value at rank ceil(p*n).
func nearestRank(sorted []float64, p float64) float64 {
	return sorted[int(math.Ceil(p*float64(len(sorted))))-1]
}

// wantSeries computes in Go what Store.Series must return for evs.
func wantSeries(q SeriesQuery, evs []events.SelectionEvent) (models, cats map[string][]int64, p50, p99 []*float64) {
	models, cats = map[string][]int64{}, map[string][]int64{}
	durations := make([][]float64, q.Buckets)
	for _, ev := range evs {
		// Rows keep microseconds; a bucket is decided by the stored second.
		ts := ev.Timestamp.Truncate(time.Microsecond)
		if ts.Before(q.From) || !ts.Before(q.To()) {
			continue
		}
		b := int(ts.Sub(q.From) / q.Step)
		for _, m := range []struct {
			lines map[string][]int64
			name  string
		}{{models, ev.SelectedModel}, {cats, ev.TaskCategory}} {
			if m.lines[m.name] == nil {
				m.lines[m.name] = make([]int64, q.Buckets)
			}
			m.lines[m.name][b]++
		}
		durations[b] = append(durations[b], ev.SelectionDurationMs)
	}
	p50, p99 = make([]*float64, q.Buckets), make([]*float64, q.Buckets)
	for b, ds := range durations {
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		v50, v99 := nearestRank(ds, 0.5), nearestRank(ds, 0.99)
		p50[b], p99[b] = &v50, &v99
	}
	return models, cats, p50, p99
}

// seriesEvents spreads n events over the buckets of q, crowds bucket 5,
// puts one event exactly on bucket 1's first microsecond and one on its
// last, and one just outside the window on either side; durations vary so
// each bucket's percentiles differ.
func seriesEvents(q SeriesQuery, n int) []events.SelectionEvent {
	evs := make([]events.SelectionEvent, 0, n+4)
	span := q.To().Sub(q.From)
	for i := range n {
		ev := makeEvent(i)
		// A multiplicative step through the window: unevenly filled buckets.
		ev.Timestamp = q.From.Add(time.Duration(i*7919%n) * span / time.Duration(n)).Add(time.Duration(i%3) * 333333 * time.Nanosecond)
		ev.SelectionDurationMs = float64((i*37)%101) / 10
		evs = append(evs, ev)
	}
	// One busy bucket: with more than 100 rows, p99 is not the maximum.
	for i := range 250 {
		ev := makeEvent(n + i)
		ev.Timestamp = q.From.Add(5*q.Step + time.Duration(i)*q.Step/250)
		ev.SelectionDurationMs = float64((i*53)%250) / 7
		evs = append(evs, ev)
	}
	edge := func(id string, at time.Time) {
		ev := makeEvent(len(evs))
		ev.EventID, ev.Timestamp, ev.SelectionDurationMs = id, at, 99
		evs = append(evs, ev)
	}
	edge("first-microsecond", q.From.Add(q.Step))
	edge("last-microsecond", q.From.Add(2*q.Step-time.Microsecond))
	edge("before-window", q.From.Add(-time.Microsecond))
	edge("at-window-end", q.To())
	return evs
}

func TestStoreSeries(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			st := openStore(t, be.url(t))
			q := SeriesQuery{From: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Step: 10 * time.Second, Buckets: 12}
			evs := seriesEvents(q, 400)
			if _, err := st.Insert(testCtx(t), records(t, evs)); err != nil {
				t.Fatal(err)
			}
			got, err := st.Series(testCtx(t), q)
			if err != nil {
				t.Fatalf("Series: %v", err)
			}
			models, cats, p50, p99 := wantSeries(q, evs)
			if len(got.Times) != q.Buckets || !got.Times[0].Equal(q.From) || !got.Times[q.Buckets-1].Equal(q.To().Add(-q.Step)) || got.StepSeconds != 10 {
				t.Fatalf("buckets %v (step %d s)", got.Times, got.StepSeconds)
			}
			for _, c := range []struct {
				name  string
				got   []SeriesLine
				want  map[string][]int64
				total []int64
			}{{"models", got.Models, models, got.Total}, {"categories", got.Categories, cats, got.Total}} {
				t.Run(c.name, func(t *testing.T) {
					if len(c.got) != len(c.want) {
						t.Fatalf("%d lines, want %d: %+v", len(c.got), len(c.want), c.got)
					}
					sum := make([]int64, q.Buckets)
					for i, l := range c.got {
						if !slices.Equal(l.Counts, c.want[l.Name]) {
							t.Errorf("%s: counts %v, want %v", l.Name, l.Counts, c.want[l.Name])
						}
						var total int64
						for b, n := range l.Counts {
							total += n
							sum[b] += n
						}
						if l.Total != total {
							t.Errorf("%s: total %d, counts add up to %d", l.Name, l.Total, total)
						}
						if i > 0 && (c.got[i-1].Total < l.Total || c.got[i-1].Total == l.Total && c.got[i-1].Name > l.Name) {
							t.Errorf("lines out of order: %s (%d) before %s (%d)", c.got[i-1].Name, c.got[i-1].Total, l.Name, l.Total)
						}
					}
					if !slices.Equal(sum, c.total) {
						t.Errorf("lines add up to %v, total %v", sum, c.total)
					}
				})
			}
			for b := range q.Buckets {
				for _, p := range []struct {
					name      string
					got, want *float64
				}{{"p50", got.P50Ms[b], p50[b]}, {"p99", got.P99Ms[b], p99[b]}} {
					if (p.got == nil) != (p.want == nil) || p.got != nil && *p.got != *p.want {
						t.Errorf("bucket %d %s = %v, want %v", b, p.name, deref64(p.got), deref64(p.want))
					}
				}
			}
			// The edge events: on bucket 1's first and last microsecond, none outside.
			var edges int64
			for _, l := range got.Models {
				edges += l.Total
			}
			if edges != int64(len(evs)-2) {
				t.Errorf("%d rows in the window, want %d (the two outside excluded)", edges, len(evs)-2)
			}
			if got.P99Ms[1] == nil || *got.P99Ms[1] != 99 {
				t.Errorf("bucket 1 p99 = %v, want the edge events' 99", deref64(got.P99Ms[1]))
			}
		})
	}
}

func deref64(p *float64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func TestStoreSeriesEmptyAndInvalid(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			st := openStore(t, be.url(t))
			q := SeriesQuery{From: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Step: time.Minute, Buckets: 3}
			got, err := st.Series(testCtx(t), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Models) != 0 || len(got.Categories) != 0 || !slices.Equal(got.Total, []int64{0, 0, 0}) ||
				slices.ContainsFunc(got.P50Ms, func(p *float64) bool { return p != nil }) {
				t.Fatalf("empty table gave %+v", got)
			}
			for _, bad := range []SeriesQuery{
				{From: q.From, Step: 1500 * time.Millisecond, Buckets: 3},
				{From: q.From, Step: time.Minute, Buckets: 0},
				{From: q.From, Step: time.Minute, Buckets: MaxSeriesBuckets + 1},
				{From: q.From.Add(time.Millisecond), Step: time.Minute, Buckets: 3},
			} {
				if _, err := st.Series(testCtx(t), bad); !errors.Is(err, ErrBadSeries) {
					t.Errorf("Series(%+v) = %v, want ErrBadSeries", bad, err)
				}
			}
		})
	}
}

package metricssink

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Bounds of a series: buckets are whole seconds (both stores bucket the
// epoch second of each row), and a chart has at most MaxSeriesBuckets.
const (
	MaxSeriesBuckets = 1440
	// MaxSeriesWindow bounds a chart's window (a month): longer ones would
	// scan rows by the million on a request anyone may send.
	MaxSeriesWindow = 31 * 24 * time.Hour
	// DefaultSeriesWindow and DefaultSeriesStep are the dashboard's view.
	DefaultSeriesWindow = 15 * time.Minute
	DefaultSeriesStep   = 30 * time.Second
)

// SeriesQuery names Buckets consecutive buckets of Step, the first starting
// at From.
type SeriesQuery struct {
	From    time.Time
	Step    time.Duration
	Buckets int
}

// SeriesEnding is the query for the window ending with the bucket that holds
// now: buckets are aligned to multiples of step, so that they do not shift
// between two polls, and the last one is still filling.
func SeriesEnding(now time.Time, window, step time.Duration) (SeriesQuery, error) {
	if step <= 0 || window < step {
		return SeriesQuery{}, fmt.Errorf("%w: window %s must be at least one step (%s, positive)", ErrBadSeries, window, step)
	}
	if window > MaxSeriesWindow { // a chart, not a scan of years of rows
		return SeriesQuery{}, fmt.Errorf("%w: window %s is longer than %s", ErrBadSeries, window, MaxSeriesWindow)
	}
	n := (window + step - 1) / step
	if n > MaxSeriesBuckets {
		return SeriesQuery{}, fmt.Errorf("%w: window %s in steps of %s makes %d buckets, limit %d", ErrBadSeries, window, step, n, MaxSeriesBuckets)
	}
	end := now.UTC().Truncate(step).Add(step)
	q := SeriesQuery{From: end.Add(-time.Duration(n) * step), Step: step, Buckets: int(n)}
	return q, q.validate()
}

// To is the end of the last bucket (exclusive).
func (q SeriesQuery) To() time.Time { return q.From.Add(time.Duration(q.Buckets) * q.Step) }

func (q SeriesQuery) validate() error {
	switch {
	case q.Step < time.Second || q.Step%time.Second != 0:
		return fmt.Errorf("%w: step %s must be a whole number of seconds", ErrBadSeries, q.Step)
	case q.Buckets < 1 || q.Buckets > MaxSeriesBuckets:
		return fmt.Errorf("%w: %d buckets, want 1..%d", ErrBadSeries, q.Buckets, MaxSeriesBuckets)
	case q.From.Nanosecond() != 0:
		return fmt.Errorf("%w: start %s is not a whole second", ErrBadSeries, q.From.Format(time.RFC3339Nano))
	}
	return nil
}

// Series is what the dashboard charts: per bucket, how many decisions each
// model and each category got, and the percentiles of their
// selection_duration_ms (nearest rank; null for a bucket without decisions).
type Series struct {
	From        time.Time `json:"from"`
	StepSeconds int64     `json:"step_s"`
	// Times are the buckets' starts.
	Times      []time.Time  `json:"times"`
	Total      []int64      `json:"total"`
	Models     []SeriesLine `json:"models"`
	Categories []SeriesLine `json:"categories"`
	P50Ms      []*float64   `json:"p50_ms"`
	P99Ms      []*float64   `json:"p99_ms"`
}

// SeriesLine is one model's or category's count per bucket; lines are
// ordered by Total, largest first, then by name.
type SeriesLine struct {
	Name   string  `json:"name"`
	Total  int64   `json:"total"`
	Counts []int64 `json:"counts"`
}

// The two series queries, shared by both stores: only the bucket of a row
// (its epoch second minus the start's, divided by the step, in integers)
// and the placeholders differ. Arguments: start epoch second, step seconds,
// start and end of the window as the store's timestamp type.
//
// Percentiles are nearest rank: the value at rank ceil(p*n) of the bucket's
// n durations, ceil done in integers as (n*P + 99) / 100.
const (
	seriesCountsTmpl = `SELECT {bucket} AS bucket, task_category, selected_model, COUNT(*)
FROM selection_metrics
WHERE timestamp >= {from} AND timestamp < {to}
GROUP BY 1, 2, 3`

	seriesLatencyTmpl = `WITH b AS (
	SELECT {bucket} AS bucket, selection_duration_ms AS d
	FROM selection_metrics
	WHERE timestamp >= {from} AND timestamp < {to}
), r AS (
	SELECT bucket, d,
	       ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY d) AS rn,
	       COUNT(*) OVER (PARTITION BY bucket) AS n
	FROM b
)
SELECT bucket,
       MAX(CASE WHEN rn = (n * 50 + 99) / 100 THEN d END),
       MAX(CASE WHEN rn = (n * 99 + 99) / 100 THEN d END)
FROM r
WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 99 + 99) / 100
GROUP BY bucket`
)

// seriesSQL fills a series template for SQLite (numbered false: text
// timestamps, strftime) or PostgreSQL (timestamptz, EXTRACT).
func seriesSQL(tmpl string, numbered bool) string {
	r := strings.NewReplacer(
		"{bucket}", "(CAST(strftime('%s', timestamp) AS INTEGER) - ?) / ?",
		"{from}", "?", "{to}", "?")
	if numbered {
		r = strings.NewReplacer(
			"{bucket}", "(FLOOR(EXTRACT(EPOCH FROM timestamp))::bigint - $1) / $2",
			"{from}", "$3", "{to}", "$4")
	}
	return r.Replace(tmpl)
}

// seriesBuilder collects the rows of the two queries into a Series.
type seriesBuilder struct {
	q      SeriesQuery
	s      Series
	models map[string]*SeriesLine
	cats   map[string]*SeriesLine
}

func newSeriesBuilder(q SeriesQuery) *seriesBuilder {
	b := &seriesBuilder{
		q: q,
		s: Series{
			From: q.From.UTC(), StepSeconds: int64(q.Step / time.Second),
			Times: make([]time.Time, q.Buckets), Total: make([]int64, q.Buckets),
			P50Ms: make([]*float64, q.Buckets), P99Ms: make([]*float64, q.Buckets),
		},
		models: map[string]*SeriesLine{},
		cats:   map[string]*SeriesLine{},
	}
	for i := range b.s.Times {
		b.s.Times[i] = b.s.From.Add(time.Duration(i) * q.Step)
	}
	return b
}

// inRange guards against a row the database bucketed outside the window
// (it cannot, given the WHERE clause, but an index must never panic).
func (b *seriesBuilder) inRange(bucket int64) bool { return bucket >= 0 && bucket < int64(b.q.Buckets) }

func (b *seriesBuilder) addCount(bucket int64, category, model string, n int64) {
	if !b.inRange(bucket) {
		return
	}
	line := func(m map[string]*SeriesLine, name string) *SeriesLine {
		l, ok := m[name]
		if !ok {
			l = &SeriesLine{Name: name, Counts: make([]int64, b.q.Buckets)}
			m[name] = l
		}
		return l
	}
	for _, l := range []*SeriesLine{line(b.models, model), line(b.cats, category)} {
		l.Counts[bucket] += n
		l.Total += n
	}
	b.s.Total[bucket] += n
}

func (b *seriesBuilder) addLatency(bucket int64, p50, p99 float64) {
	if !b.inRange(bucket) {
		return
	}
	b.s.P50Ms[bucket], b.s.P99Ms[bucket] = &p50, &p99
}

func (b *seriesBuilder) finish() *Series {
	lines := func(m map[string]*SeriesLine) []SeriesLine {
		out := make([]SeriesLine, 0, len(m))
		for _, l := range m {
			out = append(out, *l)
		}
		slices.SortFunc(out, func(a, b SeriesLine) int {
			return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Name, b.Name))
		})
		return out
	}
	b.s.Models, b.s.Categories = lines(b.models), lines(b.cats)
	return &b.s
}

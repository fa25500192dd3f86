package metricssink

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// storeBehaviours are run against every backend: the stores must not differ.
var storeBehaviours = []struct {
	name string
	run  func(t *testing.T, url string)
}{
	{"insert a batch", testInsertBatch},
	{"duplicate event ids are ignored", testDuplicatesIgnored},
	{"every column round-trips", testRoundTrip},
	{"recent is newest first and limited", testRecent},
	{"reports aggregate hand-made data", testReports},
	{"unknown report names the valid ones", testUnknownReport},
	{"reopening keeps the data and the schema version", testReopen},
	{"a failed insert commits nothing", testFailedInsertCommitsNothing},
}

func TestStores(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, bh := range storeBehaviours {
				t.Run(bh.name, func(t *testing.T) { bh.run(t, b.url(t)) })
			}
		})
	}
}

func testInsertBatch(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	n, err := s.Insert(ctx, records(t, makeEvents(0, 100)))
	if err != nil || n != 100 {
		t.Fatalf("Insert = %d, %v; want 100, nil", n, err)
	}
	if n, err := s.Insert(ctx, nil); err != nil || n != 0 {
		t.Fatalf("Insert(nil) = %d, %v; want 0, nil", n, err)
	}
	if c, err := s.Count(ctx); err != nil || c != 100 {
		t.Fatalf("Count = %d, %v; want 100", c, err)
	}
}

func testDuplicatesIgnored(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	a, b, c := makeEvent(1), makeEvent(2), makeEvent(3)
	changed := b
	changed.SelectedModel = "changed-on-redelivery"
	steps := []struct {
		name  string
		batch []events.SelectionEvent
		want  int
		total int64
	}{
		{"fresh", []events.SelectionEvent{a, b}, 2, 2},
		{"one old, one new", []events.SelectionEvent{b, c}, 1, 3},
		{"the same id twice in one batch", []events.SelectionEvent{makeEvent(4), makeEvent(4)}, 1, 4},
		{"all old, one with other values", []events.SelectionEvent{a, changed, c}, 0, 4},
	}
	for _, st := range steps {
		n, err := s.Insert(ctx, records(t, st.batch))
		if err != nil || n != st.want {
			t.Fatalf("%s: Insert = %d, %v; want %d", st.name, n, err, st.want)
		}
		if got, err := s.Count(ctx); err != nil || got != st.total {
			t.Fatalf("%s: Count = %d, %v; want %d", st.name, got, err, st.total)
		}
	}
	rows, err := s.Recent(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.EventID == b.EventID && r.SelectedModel != b.SelectedModel {
			t.Fatalf("a redelivery overwrote the first row: selected_model %q", r.SelectedModel)
		}
	}
}

func testRoundTrip(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	full := makeEvent(1) // with a GPU
	full.Reason = "ünïcode réason, 'quotes' and \"double\" — ok"
	bare := events.SelectionEvent{ // only what validation requires
		Timestamp:     time.Date(2024, 12, 31, 23, 59, 59, 999999999, time.UTC),
		TaskCategory:  "chat",
		SelectedModel: "tiny",
		EventID:       "bare",
	}
	gpuZero := makeEvent(2)
	gpuZero.GPUID = intPtr(0)
	extreme := makeEvent(4)
	extreme.EventID = "extreme"
	extreme.ConfidenceScore = math.SmallestNonzeroFloat64
	extreme.FinalScore = 1.0 / 3.0
	extreme.SelectionDurationMs = 123456.789
	extreme.Timestamp = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.FixedZone("UTC+5", 5*3600))
	cases := []struct {
		name string
		ev   events.SelectionEvent
	}{
		{"full event with a GPU", full},
		{"bare event: optional columns are empty", bare},
		{"GPU index 0 is not NULL", gpuZero},
		{"degraded, no GPU", makeEvent(3)},
		{"extreme numbers and a non-UTC zone", extreme},
	}
	batch := make([]events.SelectionEvent, len(cases))
	for i, c := range cases {
		batch[i] = c.ev
	}
	if n, err := s.Insert(ctx, records(t, batch)); err != nil || n != len(batch) {
		t.Fatalf("Insert = %d, %v", n, err)
	}
	rows, err := s.Recent(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Row{}
	for _, r := range rows {
		byID[r.EventID] = r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := c.ev
			r, ok := byID[ev.EventID]
			if !ok {
				t.Fatalf("no row for %s", ev.EventID)
			}
			var wantGPU any
			if ev.GPUID != nil {
				wantGPU = *ev.GPUID
			}
			var gotGPU any
			if r.GPUID != nil {
				gotGPU = *r.GPUID
			}
			checks := []struct {
				col       string
				got, want any
			}{
				{"timestamp", r.Timestamp, ev.Timestamp.UTC().Truncate(time.Microsecond)},
				{"task_category", r.TaskCategory, ev.TaskCategory},
				{"selected_model", r.SelectedModel, ev.SelectedModel},
				{"primary_category", r.PrimaryCategory, ev.PrimaryCategory},
				{"confidence_score", r.ConfidenceScore, ev.ConfidenceScore},
				{"final_score", r.FinalScore, ev.FinalScore},
				{"gpu_id", gotGPU, wantGPU},
				{"selection_duration_ms", r.SelectionDurationMs, ev.SelectionDurationMs},
				{"request_id", r.RequestID, ev.RequestID},
				{"host", r.Host, ev.Host},
				{"gpu_uuid", r.GPUUUID, ev.GPUUUID},
				{"mode", r.Mode, ev.Mode},
				{"requested_mode", r.RequestedMode, ev.RequestedMode},
				{"degraded", r.Degraded, ev.Degraded},
				{"reason", r.Reason, ev.Reason},
				{"quality_score", r.QualityScore, ev.Scores.Quality},
				{"placement_score", r.PlacementScore, ev.Scores.Placement},
				{"telemetry_age_ms", r.TelemetryAgeMs, ev.TelemetryAgeMs},
				{"selector", r.Selector, ev.Selector},
			}
			for _, ch := range checks {
				if !reflect.DeepEqual(ch.got, ch.want) {
					t.Errorf("%s = %#v, want %#v", ch.col, ch.got, ch.want)
				}
			}
			if !r.Event.Timestamp.Equal(ev.Timestamp) {
				t.Errorf("event_json timestamp %s, want %s (exact)", r.Event.Timestamp, ev.Timestamp)
			}
			got, _ := json.Marshal(r.Event)
			want, _ := json.Marshal(ev)
			if string(got) != string(want) {
				t.Errorf("event_json differs:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func testRecent(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	evs := makeEvents(0, 20)
	slices.Reverse(evs) // insertion order must not matter
	if _, err := s.Insert(ctx, records(t, evs)); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Recent(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.EventID)
	}
	want := []string{"ev-000019", "ev-000018", "ev-000017", "ev-000016", "ev-000015"}
	if !slices.Equal(ids, want) {
		t.Fatalf("Recent(5) = %v, want %v", ids, want)
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.Recent(ctx, limit); !errors.Is(err, ErrBadLimit) {
			t.Errorf("Recent(%d) error = %v, want ErrBadLimit", limit, err)
		}
	}
}

// reportData is hand-made: the expected aggregates below are worked out by hand.
//
//	code:  m1 x3 (confidence .9 .9 .6; duration 1 2 3; score .5 .6 .7), m2 x1 (conf .8, dur 4, score .2)
//	math:  m1 x1 (conf .3, dur 10, score 1)
//	chat:  m3 x2 (conf .95 .95, dur 5 7, score .4 .6)
func reportData() []events.SelectionEvent {
	mk := func(id, cat, model string, conf, dur, score float64) events.SelectionEvent {
		return events.SelectionEvent{
			Timestamp: baseTime, EventID: id, TaskCategory: cat, SelectedModel: model,
			ConfidenceScore: conf, SelectionDurationMs: dur, FinalScore: score,
			Mode: selection.ModeMultiCategory, RequestedMode: selection.ModeMultiCategory,
		}
	}
	return []events.SelectionEvent{
		mk("r1", "code", "m1", 0.9, 1, 0.5),
		mk("r2", "code", "m1", 0.9, 2, 0.6),
		mk("r3", "code", "m1", 0.6, 3, 0.7),
		mk("r4", "code", "m2", 0.8, 4, 0.2),
		mk("r5", "math", "m1", 0.3, 10, 1.0),
		mk("r6", "chat", "m3", 0.95, 5, 0.4),
		mk("r7", "chat", "m3", 0.95, 7, 0.6),
	}
}

// wantReports are the hand-worked answers to reportData, rows in the order
// the query defines (or sorted by first column when it defines none).
var wantReports = map[string]struct {
	cols []string
	rows [][]any
}{
	ReportModelsPerCategory: {
		cols: []string{"task_category", "selected_model", "usage_count"},
		rows: [][]any{{"chat", "m3", int64(2)}, {"code", "m1", int64(3)}, {"code", "m2", int64(1)}, {"math", "m1", int64(1)}},
	},
	ReportMultiCategoryEffectiveness: {
		cols: []string{"selected_model", "categories_served", "avg_confidence"},
		rows: [][]any{{"m1", int64(2), (0.9 + 0.9 + 0.6 + 0.3) / 4}},
	},
	ReportPerformanceByCategory: {
		cols: []string{"task_category", "avg_duration", "avg_score"},
		rows: [][]any{{"chat", 6.0, 0.5}, {"code", 2.5, 0.5}, {"math", 10.0, 1.0}},
	},
}

// checkReport compares a result with wantReports[name]; floats to 1e-9.
func checkReport(t *testing.T, name string, cols []string, rows [][]any) {
	t.Helper()
	want := wantReports[name]
	if !slices.Equal(cols, want.cols) {
		t.Fatalf("%s columns = %v, want %v", name, cols, want.cols)
	}
	if name != ReportModelsPerCategory { // no ORDER BY in the seed's text
		slices.SortFunc(rows, func(a, b []any) int { return strings.Compare(a[0].(string), b[0].(string)) })
	}
	if len(rows) != len(want.rows) {
		t.Fatalf("%s rows = %v, want %v", name, rows, want.rows)
	}
	for i := range rows {
		for j := range rows[i] {
			g, w := rows[i][j], want.rows[i][j]
			if wf, ok := w.(float64); ok {
				if gf, ok := g.(float64); !ok || math.Abs(gf-wf) > 1e-9 {
					t.Errorf("%s row %d %s = %#v, want %v", name, i, cols[j], g, wf)
				}
				continue
			}
			if g != w {
				t.Errorf("%s row %d %s = %#v, want %#v", name, i, cols[j], g, w)
			}
		}
	}
}

func testReports(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	if _, err := s.Insert(ctx, records(t, reportData())); err != nil {
		t.Fatal(err)
	}
	for _, info := range Reports() {
		t.Run(info.Name, func(t *testing.T) {
			res, err := s.Report(ctx, info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if res.Name != info.Name {
				t.Errorf("Name = %q", res.Name)
			}
			// The JSON form is what the CLI and the endpoint serve.
			js, err := json.Marshal(res)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !strings.Contains(string(js), `"columns":[`) {
				t.Errorf("JSON %s lacks columns", js)
			}
			checkReport(t, info.Name, res.Columns, res.Rows)
		})
	}
}

func testUnknownReport(t *testing.T, url string) {
	s := openStore(t, url)
	_, err := s.Report(testCtx(t), "no-such-report")
	if !errors.Is(err, ErrUnknownReport) {
		t.Fatalf("error = %v, want ErrUnknownReport", err)
	}
	for _, info := range Reports() {
		if !strings.Contains(err.Error(), info.Name) {
			t.Errorf("error %q does not name %s", err, info.Name)
		}
	}
}

func testReopen(t *testing.T, url string) {
	ctx := testCtx(t)
	first, err := OpenStore(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Insert(ctx, records(t, makeEvents(0, 10))); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := openStore(t, url)
	if c, err := second.Count(ctx); err != nil || c != 10 {
		t.Fatalf("Count after reopen = %d, %v; want 10", c, err)
	}
	if n, err := second.Insert(ctx, records(t, makeEvents(5, 10))); err != nil || n != 5 {
		t.Fatalf("Insert after reopen = %d, %v; want 5", n, err)
	}
	var versions, want int
	switch st := second.(type) {
	case *SQLiteStore:
		want = len(sqliteMigrations)
		err = st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_version").Scan(&versions)
	case *PostgresStore:
		want = len(postgresMigrations)
		err = st.Pool().QueryRow(ctx, "SELECT COUNT(*) FROM schema_version").Scan(&versions)
	}
	if err != nil || versions != want {
		t.Fatalf("schema_version rows = %d, %v; want one per migration, %d", versions, err, want)
	}
}

func testFailedInsertCommitsNothing(t *testing.T, url string) {
	s := openStore(t, url)
	ctx := testCtx(t)
	if _, err := s.Insert(ctx, records(t, makeEvents(0, 3))); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Insert(canceled, records(t, makeEvents(3, 3))); !errors.Is(err, ErrInsert) {
		t.Fatalf("Insert on a canceled context: error = %v, want ErrInsert", err)
	}
	if c, err := s.Count(ctx); err != nil || c != 3 {
		t.Fatalf("Count = %d, %v; want 3", c, err)
	}
}

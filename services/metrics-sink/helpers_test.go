package metricssink

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Environment of the PostgreSQL tests: the URL of a server the tests may
// create schemas in (scripts/postgres-test-server prints one), and whether
// its absence fails the run (CI) instead of skipping.
const (
	envPostgresURL     = "ORCH_TEST_POSTGRES_URL"
	envRequirePostgres = "ORCH_REQUIRE_POSTGRES"
)

// testCtx bounds a test's calls to the stores and the bus.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// backend opens fresh, empty databases of one kind: url(t) names a new one,
// which OpenStore opens (again and again, for restart tests).
type backend struct {
	name string
	url  func(t testing.TB) string
}

func backends() []backend {
	return []backend{
		{name: "sqlite", url: func(t testing.TB) string {
			return "sqlite:" + filepath.Join(t.TempDir(), "selections.db")
		}},
		{name: "postgres", url: postgresURL},
	}
}

// postgresURL returns the test server's URL with a search_path naming a new
// schema, dropped when the test ends: each test gets its own selection_metrics.
func postgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(envPostgresURL)
	if base == "" {
		if os.Getenv(envRequirePostgres) == "1" {
			t.Fatalf("%s=1 but %s is not set: start one with scripts/postgres-test-server", envRequirePostgres, envPostgresURL)
		}
		t.Skipf("PostgreSQL tests skipped: set %s (scripts/postgres-test-server prints one)", envPostgresURL)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", envPostgresURL, err)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "sinktest_" + hex.EncodeToString(b[:])
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", envPostgresURL, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openStore opens url and closes the store when the test ends.
func openStore(t testing.TB, url string) Store {
	t.Helper()
	s, err := OpenStore(testCtx(t), url)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// baseTime is the clock of the made-up events; nanoseconds on purpose, to
// show the timestamp column keeps microseconds and event_json all of it.
var baseTime = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func intPtr(i int) *int { return &i }

// makeEvent returns a plausible event number i: categories and models cycle,
// every third event has no GPU.
func makeEvent(i int) events.SelectionEvent {
	cats := []string{"code", "math", "reasoning"}
	models := []string{"qwen2.5-coder-7b", "deepseek-math-7b", "llama-3.1-8b", "mistral-7b"}
	ev := events.SelectionEvent{
		Timestamp:           baseTime.Add(time.Duration(i) * time.Millisecond),
		TaskCategory:        cats[i%len(cats)],
		SelectedModel:       models[i%len(models)],
		PrimaryCategory:     i%2 == 0,
		ConfidenceScore:     0.7 + float64(i%3)*0.1,
		FinalScore:          0.5 + float64(i%7)/100,
		SelectionDurationMs: 0.05 + float64(i%5)/1000,
		EventID:             fmt.Sprintf("ev-%06d", i),
		RequestID:           fmt.Sprintf("req-%d", i),
		RequestedMode:       selection.ModeGPUAware,
		Mode:                selection.ModeGPUAware,
		Reason:              "best quality x confidence x placement",
		Scores:              selection.Scores{Quality: 0.8, Confidence: 0.9, Placement: 0.75, Utilization: 0.5, Headroom: 0.6, Temperature: 0.9},
		Alternatives:        []selection.Alternative{{ModelID: "other", FinalScore: 0.4}},
		TelemetryAgeMs:      120,
		Selector:            "selector-1",
		Request:             selection.Request{RequestID: fmt.Sprintf("req-%d", i), TaskCategory: cats[i%len(cats)]},
		TieSeed:             uint64(i) * 7919,
	}
	if i%3 == 0 {
		ev.Mode = selection.ModeMultiCategory
		ev.Degraded = true
		ev.TelemetryAgeMs = -1
		ev.Scores.Placement = 1
	} else {
		ev.GPUID = intPtr(i % 4)
		ev.Host = "gpu-host-1"
		ev.GPUUUID = fmt.Sprintf("GPU-%04d", i%4)
	}
	return ev
}

// records makes the records the sink's decode stage would make of evs.
func records(tb testing.TB, evs []events.SelectionEvent) []Record {
	tb.Helper()
	recs := make([]Record, len(evs))
	for i, ev := range evs {
		r, err := NewRecord(ev)
		if err != nil {
			tb.Fatalf("event %d: %v", i, err)
		}
		recs[i] = r
	}
	return recs
}

func makeEvents(from, n int) []events.SelectionEvent {
	evs := make([]events.SelectionEvent, n)
	for i := range evs {
		evs[i] = makeEvent(from + i)
	}
	return evs
}

// waitFor polls cond until it holds; it fails the test only after a
// generous deadline, so it asserts an outcome, not a speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queryAll runs q on db and returns its columns and every row as scanned.
func queryAll(t *testing.T, db *sql.DB, q string) ([]string, [][]any) {
	t.Helper()
	rows, err := db.QueryContext(testCtx(t), q)
	if err != nil {
		t.Fatalf("query fails on SQLite: %v\n%s", err, q)
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var got [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		got = append(got, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cols, got
}

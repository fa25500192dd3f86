package metricssink

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestPostgresEventJSONCompression: where the server has lz4, opening the
// store makes event_json compressed with it, also in a table that had pglz;
// a query holding the table only delays the open by the lock timeout, and
// the store says why the column kept pglz.
func TestPostgresEventJSONCompression(t *testing.T) {
	url := postgresURL(t)
	ctx := testCtx(t)
	first := openStore(t, url).(*PostgresStore)
	pool := first.Pool()
	var hasLZ4 bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_settings
		WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))`).Scan(&hasLZ4); err != nil {
		t.Fatal(err)
	}
	if !hasLZ4 {
		t.Skip("this PostgreSQL has no lz4 (before 14, or built without it): event_json keeps pglz")
	}
	method := func() string {
		t.Helper()
		var m string
		if err := pool.QueryRow(ctx, `SELECT attcompression::text FROM pg_attribute
			WHERE attrelid = 'selection_metrics'::regclass AND attname = 'event_json'`).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	toPGLZ := func() {
		t.Helper()
		if _, err := pool.Exec(ctx, `ALTER TABLE selection_metrics ALTER COLUMN event_json SET COMPRESSION pglz`); err != nil {
			t.Fatal(err)
		}
	}
	if m := method(); m != "l" || len(first.OpenNotes()) != 0 {
		t.Fatalf("after open: compression %q, notes %q; want lz4 and none", m, first.OpenNotes())
	}

	toPGLZ()
	again := openStore(t, url).(*PostgresStore)
	if m := method(); m != "l" || len(again.OpenNotes()) != 0 {
		t.Fatalf("reopened on pglz: compression %q, notes %q; want lz4 and none", m, again.OpenNotes())
	}
	// A big event is stored compressed with lz4 and comes back whole.
	ev := makeEvents(0, 1)
	ev[0].Reason = strings.Repeat("placement detail ", 400)
	if n, err := again.Insert(ctx, records(t, ev)); err != nil || n != 1 {
		t.Fatalf("Insert = %d, %v; want 1", n, err)
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT pg_column_compression(event_json) FROM selection_metrics
		WHERE event_id = $1`, ev[0].EventID).Scan(&stored); err != nil || stored != "lz4" {
		t.Fatalf("row's event_json compression = %q, %v; want lz4", stored, err)
	}
	rows, err := again.Recent(ctx, 1)
	if err != nil || len(rows) != 1 || rows[0].Event.Reason != ev[0].Reason {
		t.Fatalf("Recent = %d rows, %v; want the event with its %d-byte reason", len(rows), err, len(ev[0].Reason))
	}

	// An analyst's open transaction on the table: the open waits at most
	// the lock timeout, succeeds, and notes why the column kept pglz.
	toPGLZ()
	reader, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reader.Rollback(ctx) }()
	if _, err := reader.Exec(ctx, `SELECT COUNT(*) FROM selection_metrics`); err != nil {
		t.Fatal(err)
	}
	held := openStore(t, url).(*PostgresStore)
	if notes := held.OpenNotes(); len(notes) != 1 || !strings.Contains(notes[0], "lock timeout") {
		t.Fatalf("notes = %q, want one naming the lock timeout", notes)
	}
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if m := method(); m != "p" {
		t.Fatalf("compression after a timed-out change = %q, want pglz kept", m)
	}
}

// TestPostgresRefusedValue: PostgreSQL cannot store a NUL byte; the store
// names the event, commits nothing, and the batch without it goes in.
func TestPostgresRefusedValue(t *testing.T) {
	s := openStore(t, postgresURL(t))
	ctx := testCtx(t)
	batch := makeEvents(0, 3)
	batch[1].Reason = "bad \x00 byte"
	_, err := s.Insert(ctx, records(t, batch))
	var re *RowError
	if !errors.As(err, &re) || !errors.Is(err, ErrBadRow) {
		t.Fatalf("error = %v, want a *RowError wrapping ErrBadRow", err)
	}
	if re.Index != 1 || re.EventID != batch[1].EventID {
		t.Fatalf("RowError names index %d event %s, want 1 %s", re.Index, re.EventID, batch[1].EventID)
	}
	if c, err := s.Count(ctx); err != nil || c != 0 {
		t.Fatalf("Count = %d, %v; want 0 (rolled back)", c, err)
	}
	if n, err := s.Insert(ctx, records(t, append(batch[:1:1], batch[2]))); err != nil || n != 2 {
		t.Fatalf("Insert without the bad event = %d, %v; want 2", n, err)
	}
}

// TestPostgresCopyThenFallback: a batch of new events goes in through COPY;
// a batch holding a stored one fails COPY whole (unique violation) and goes
// in row by row, skipping it.
func TestPostgresCopyThenFallback(t *testing.T) {
	s := openStore(t, postgresURL(t)).(*PostgresStore)
	ctx := testCtx(t)
	if n, err := s.Insert(ctx, records(t, makeEvents(0, 5))); err != nil || n != 5 || s.rowByRow.Load() != 0 {
		t.Fatalf("Insert of new events = %d, %v, %d batches row by row; want 5 by COPY", n, err, s.rowByRow.Load())
	}
	mixed := records(t, makeEvents(3, 5)) // 3 and 4 are stored
	_, err := s.copyRows(ctx, mixed, eventIDOrder(mixed))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("copyRows with stored events: error %v, want a unique violation", err)
	}
	if c, err := s.Count(ctx); err != nil || c != 5 {
		t.Fatalf("Count after the failed COPY = %d, %v; want 5 (nothing of it kept)", c, err)
	}
	if n, err := s.Insert(ctx, mixed); err != nil || n != 3 || s.rowByRow.Load() != 1 {
		t.Fatalf("Insert of 2 stored and 3 new = %d, %v, %d batches row by row; want 3, row by row", n, err, s.rowByRow.Load())
	}
	if c, err := s.Count(ctx); err != nil || c != 8 {
		t.Fatalf("Count = %d, %v; want 8", c, err)
	}
}

// TestPostgresOverlappingBatches: sinks storing overlapping batches at once
// (a redelivery after AckWait while the first sink still writes) do not
// deadlock. Another writer holds the lower of two event ids when a batch
// listing the higher first goes in: the batch waits at the lower without
// having taken the higher, so the other writer takes that at once, commits,
// and the batch then skips both. In the batch's own order it would hold the
// higher id while waiting: each would wait for the other.
func TestPostgresOverlappingBatches(t *testing.T) {
	s := openStore(t, postgresURL(t)).(*PostgresStore)
	ctx := testCtx(t)
	recs := records(t, makeEvents(0, 2))
	slices.SortFunc(recs, func(a, b Record) int { return strings.Compare(a.Event.EventID, b.Event.EventID) })
	low, high := recs[0], recs[1]

	other, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	var otherPID int
	if err := other.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&otherPID); err != nil {
		t.Fatal(err)
	}
	insert := func(r Record) error {
		_, err := other.Exec(ctx, insertSQL(true), insertArgs(&r, r.Event.Timestamp)...)
		return err
	}
	if err := insert(low); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.Insert(ctx, []Record{high, low})
		done <- result{n, err}
	}()
	waitFor(t, "the batch to wait for the other writer's row", func() bool {
		var waiting int
		err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE $1 = ANY (pg_blocking_pids(pid))`, otherPID).Scan(&waiting)
		return err == nil && waiting > 0
	})
	if err := insert(high); err != nil {
		t.Fatalf("the other writer's second row: %v (the batch took it before the lower id)", err)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatalf("the other writer's commit: %v", err)
	}
	if r := <-done; r.err != nil || r.n != 0 {
		t.Fatalf("Insert = %d, %v; want 0 (both stored by the other writer) and no error", r.n, r.err)
	}
	if c, err := s.Count(ctx); err != nil || c != 2 {
		t.Fatalf("Count = %d, %v; want 2", c, err)
	}
}

// A server that accepts the connection and never answers does not hold the
// open: it fails within the connect timeout, naming the server.
func TestPostgresSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }() // held open, never answered
		}
	}()
	defer func(d time.Duration) { postgresConnectTimeout = d }(postgresConnectTimeout)
	postgresConnectTimeout = 200 * time.Millisecond
	url := fmt.Sprintf("postgres://sink:pw@%s/orch?sslmode=disable", ln.Addr())
	_, err = OpenPostgres(testCtx(t), url)
	if !errors.Is(err, ErrOpenStore) || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err = %v, want ErrOpenStore naming %s and a timeout", err, ln.Addr())
	}
}

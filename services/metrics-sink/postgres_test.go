package metricssink

import (
	"errors"
	"strings"
	"testing"
)

// TestPostgresEventJSONCompression: where the server has lz4, event_json is
// compressed with it (migration 2), also in a table made by version 1; a
// server without it keeps pglz.
func TestPostgresEventJSONCompression(t *testing.T) {
	url := postgresURL(t)
	ctx := testCtx(t)
	v1, err := OpenStore(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	// Back to what version 1 left: the default compression, no version 2.
	pool := v1.(*PostgresStore).Pool()
	for _, q := range []string{
		`ALTER TABLE selection_metrics ALTER COLUMN event_json SET COMPRESSION default`,
		`DELETE FROM schema_version WHERE version = 2`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, url).(*PostgresStore)
	var hasLZ4 bool
	if err := s.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_settings
		WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))`).Scan(&hasLZ4); err != nil {
		t.Fatal(err)
	}
	var method string
	if err := s.Pool().QueryRow(ctx, `SELECT attcompression::text FROM pg_attribute
		WHERE attrelid = 'selection_metrics'::regclass AND attname = 'event_json'`).Scan(&method); err != nil {
		t.Fatal(err)
	}
	want := "" // the server's default_toast_compression, pglz unless set
	if hasLZ4 {
		want = "l"
	}
	if method != want {
		t.Fatalf("event_json compression = %q, want %q (server has lz4: %v)", method, want, hasLZ4)
	}
	var version int
	if err := s.Pool().QueryRow(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&version); err != nil || version != 2 {
		t.Fatalf("schema version = %d, %v; want 2", version, err)
	}
	// A big event goes in and comes back whole through the compressed column.
	ev := makeEvents(0, 1)
	ev[0].Reason = strings.Repeat("placement detail ", 400)
	if n, err := s.Insert(ctx, records(t, ev)); err != nil || n != 1 {
		t.Fatalf("Insert = %d, %v; want 1", n, err)
	}
	rows, err := s.Recent(ctx, 1)
	if err != nil || len(rows) != 1 || rows[0].Event.Reason != ev[0].Reason {
		t.Fatalf("Recent = %d rows, %v; want the event with its %d-byte reason", len(rows), err, len(ev[0].Reason))
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

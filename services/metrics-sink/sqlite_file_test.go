package metricssink

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/events"
)

// A new SQLite file gets WAL and the large page size; a file made before
// keeps its page size and still takes rows.
func TestSQLiteFileSettings(t *testing.T) {
	settings := func(t *testing.T, st *SQLiteStore) (pageSize int, mode string) {
		t.Helper()
		if err := st.DB().QueryRowContext(testCtx(t), "PRAGMA page_size").Scan(&pageSize); err != nil {
			t.Fatal(err)
		}
		// 2 is FULL: a commit (after which events are acked) survives a power loss.
		var sync int
		if err := st.DB().QueryRowContext(testCtx(t), "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
			t.Fatalf("synchronous = %d (%v), want 2 (FULL)", sync, err)
		}
		if err := st.DB().QueryRowContext(testCtx(t), "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		return pageSize, mode
	}
	tests := []struct {
		name     string
		prepare  func(t *testing.T, path string)
		wantPage int
	}{
		{"new file", func(*testing.T, string) {}, sqlitePageSize},
		{"file made with 4 KiB pages", func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", path+"?_pragma=page_size(4096)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(testCtx(t), "CREATE TABLE earlier (x)"); err != nil {
				t.Fatal(err)
			}
		}, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "selections.db")
			tt.prepare(t, path)
			st, err := OpenSQLite(testCtx(t), path)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if page, mode := settings(t, st); page != tt.wantPage || mode != "wal" {
				t.Fatalf("page_size %d, journal_mode %q; want %d, wal", page, mode, tt.wantPage)
			}
			if n, err := st.Insert(testCtx(t), records(t, makeEvents(0, 3))); err != nil || n != 3 {
				t.Fatalf("Insert = %d, %v; want 3 rows", n, err)
			}
		})
	}
}

// The checkpointer copies committed rows into the database file beside the
// writer, and a writer that finds the WAL past its limit completes the copy
// before its batch, so the WAL restarts instead of growing batch by batch.
func TestSQLiteCheckpointer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.db")
	st, err := OpenSQLite(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	st.walLimitFrames = 4 // before the first commit wakes the checkpointer
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const batches, rows = 6, 100
	var firstWAL int64
	for b := range batches {
		evs := make([]events.SelectionEvent, 0, rows)
		for i := range rows {
			evs = append(evs, benchEvent(b*rows+i))
		}
		if _, err := st.Insert(testCtx(t), records(t, evs)); err != nil {
			t.Fatal(err)
		}
		if b == 0 {
			firstWAL = size(path + "-wal")
			waitFor(t, "the checkpointer to see the first batch", func() bool { return st.walFrames.Load() >= st.walLimitFrames })
		}
	}
	// Batch by batch the WAL would hold all six; restarted, about one.
	if got := size(path + "-wal"); got > 2*firstWAL {
		t.Fatalf("WAL is %d bytes after %d batches, %d after the first: it was not restarted", got, batches, firstWAL)
	}
	// 600 rows of about 2.8 KB: over 1.5 MB once copied into the file.
	waitFor(t, "rows copied into the database file", func() bool { return size(path) > 3<<19 })
	if err := st.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after checkpoints: %v", err)
	}
	if n, err := st.Count(testCtx(t)); err != nil || n != batches*rows {
		t.Fatalf("Count = %d, %v; want %d", n, err, batches*rows)
	}
}

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

// The writer never checkpoints; the checkpointer copies committed rows into
// the database file beside it, and empties a WAL grown past the threshold.
func TestSQLiteCheckpointer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.db")
	st, err := OpenSQLite(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	st.walTruncateFrames = 4 // before the first commit wakes the checkpointer
	const batches, rows = 5, 100
	evs := make([]events.SelectionEvent, 0, batches*rows)
	for i := range batches * rows {
		evs = append(evs, benchEvent(i))
	}
	for b := range batches {
		if _, err := st.Insert(testCtx(t), records(t, evs[b*rows:(b+1)*rows])); err != nil {
			t.Fatal(err)
		}
	}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// 500 rows of about 2.8 KB: over 1 MB once copied into the file.
	waitFor(t, "rows copied into the database file and the WAL emptied", func() bool {
		return size(path) > 1<<20 && size(path+"-wal") == 0
	})
	if err := st.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after checkpoints: %v", err)
	}
	if n, err := st.Count(testCtx(t)); err != nil || n != batches*rows {
		t.Fatalf("Count = %d, %v; want %d", n, err, batches*rows)
	}
}

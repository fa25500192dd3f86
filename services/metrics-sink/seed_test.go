package metricssink

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seedGuide is the original spec, in shared/ beside the repository.
const seedGuide = "../../../shared/seed/phase5-deployment-guide.md"

// TestSeedQueriesAreVerbatim: the constants the SQLite store runs are the
// seed's text, character for character.
func TestSeedQueriesAreVerbatim(t *testing.T) {
	doc, err := os.ReadFile(seedGuide)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("seed guide %s not found (shared/ is not beside this checkout)", seedGuide)
	}
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{
		"models per category":          seedModelsPerCategorySQL,
		"multi-category effectiveness": seedMultiCategoryEffectivenessSQL,
		"performance by category":      seedPerformanceByCategorySQL,
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(doc), q) {
				t.Fatalf("the seed does not contain this query verbatim:\n%s", q)
			}
		})
	}
}

// TestSeedSQLRunsOnSQLite runs the seed's text as written, straight through
// database/sql, on a table the sink filled, and checks the hand-worked numbers.
func TestSeedSQLRunsOnSQLite(t *testing.T) {
	ctx := testCtx(t)
	st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "seed.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, err := st.Insert(ctx, records(t, reportData())); err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{
		ReportModelsPerCategory:          seedModelsPerCategorySQL,
		ReportMultiCategoryEffectiveness: seedMultiCategoryEffectivenessSQL,
		ReportPerformanceByCategory:      seedPerformanceByCategorySQL,
	} {
		t.Run(name, func(t *testing.T) {
			cols, got := queryAll(t, st.DB(), q)
			checkReport(t, name, cols, got)
		})
	}
}

// TestSQLiteFile: the file is in WAL mode and its timestamps are text that
// SQLite's own date functions read.
func TestSQLiteFile(t *testing.T) {
	ctx := testCtx(t)
	st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "nested", "dir", "wal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, err := st.Insert(ctx, records(t, makeEvents(0, 1))); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, query, want string
	}{
		{"journal mode", "PRAGMA journal_mode", "wal"},
		{"timestamp text", "SELECT timestamp FROM selection_metrics", "2025-03-14T15:09:26.535897Z"},
		{"datetime() reads it", "SELECT datetime(timestamp) FROM selection_metrics", "2025-03-14 15:09:26"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			if err := st.DB().QueryRowContext(ctx, c.query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("%s = %q, want %q", c.query, got, c.want)
			}
		})
	}
	t.Run("the analysis pool cannot write", func(t *testing.T) {
		if _, err := st.DB().ExecContext(ctx, "DELETE FROM selection_metrics"); err == nil {
			t.Fatal("DELETE through DB() succeeded")
		}
	})
}

func TestOpenStoreURLs(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // relative paths open files in the working directory
	field, _ := reflect.TypeFor[Config]().FieldByName("DatabaseURL")
	binaryDefault := field.Tag.Get("default")
	cases := []struct {
		name    string
		url     string
		file    string // the SQLite file that must exist afterwards
		wantErr error
	}{
		{"default of the binary", binaryDefault, filepath.Join(dir, binaryDefault), nil},
		{"sqlite: prefix", "sqlite:" + filepath.Join(dir, "a.db"), filepath.Join(dir, "a.db"), nil},
		{"sqlite:// prefix", "sqlite://" + filepath.Join(dir, "b.db"), filepath.Join(dir, "b.db"), nil},
		{"plain path", filepath.Join(dir, "c.db"), filepath.Join(dir, "c.db"), nil},
		{"relative path", "rel/d.db", filepath.Join(dir, "rel", "d.db"), nil},
		{"empty URL", "", "", ErrDatabaseURL},
		{"unknown scheme", "mysql://user@host/db", "", ErrDatabaseURL},
		{"empty sqlite path", "sqlite:", "", ErrDatabaseURL},
		{"query in a sqlite path", "sqlite:x.db?mode=ro", "", ErrDatabaseURL},
		{"memory database", "sqlite::memory:", "", ErrDatabaseURL},
		{"SQLite URI", "sqlite:file:x.db", "", ErrDatabaseURL},
		{"unparsable postgres URL", "postgres://u:secret@host:notaport/db", "", ErrDatabaseURL},
		{"unreachable postgres", "postgres://u@127.0.0.1:1/db?connect_timeout=5", "", ErrOpenStore},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := OpenStore(testCtx(t), c.url)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("OpenStore(%q) error = %v, want %v", c.url, err, c.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenStore(%q): %v", c.url, err)
			}
			defer func() { _ = s.Close() }()
			if _, ok := s.(*SQLiteStore); !ok {
				t.Fatalf("OpenStore(%q) = %T, want *SQLiteStore", c.url, s)
			}
			if _, err := os.Stat(c.file); err != nil {
				t.Fatalf("file: %v", err)
			}
		})
	}
}

package metricssink

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/selection"

	// The pure-Go SQLite driver: the sink builds without cgo.
	_ "modernc.org/sqlite"
)

// sqliteTimeFormat stores timestamps as fixed-width UTC ISO 8601 text: it
// sorts as time does, and SQLite's date functions read it.
const sqliteTimeFormat = "2006-01-02T15:04:05.000000Z"

// sqlitePragmas: FULL sync makes each commit survive a power loss or an OS
// crash, not only a crash of the process (NORMAL in WAL mode): events are
// acknowledged after the commit and never redelivered, so a commit must
// last. One fsync per batch of up to 4,096 rows costs nothing measurable
// (BenchmarkIngest). The busy timeout rides out the writer's short locks;
// immediate transactions take the write lock up front, so two writers never
// deadlock on upgrade.
const sqlitePragmas = "_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)&_txlock=immediate"

// sqlitePageSize applies to a new database file. Rows are 2-3 KB (event_json)
// and only ever appended: 64 KiB pages write a batch in a few WAL frames
// rather than hundreds, which took ingest from 14.5k to 20-23k rows/s
// (BenchmarkIngest). An existing file keeps the page size it was made with.
const sqlitePageSize = 65536

// sqliteWALLimitFrames is the WAL length in frames (one page each: 64 MiB
// with the 64 KiB pages of a new file) past which the writer copies the WAL
// back itself before its next batch. The checkpointer copies it after each
// commit, but under steady writes the copy may never be complete when a
// batch starts, which is when SQLite restarts the WAL from its beginning; a
// writer that finds the WAL this long waits for the checkpointer's pass,
// completes the copy (PASSIVE: it never waits for readers), and the WAL
// restarts; journal_size_limit cuts the file back to this size. Only a
// reader that holds one snapshot all along keeps it growing, until it ends.
const sqliteWALLimitFrames = 1024

// sqliteCheckpointRetry is how often a failed checkpoint is tried again
// while no commit comes to wake the checkpointer.
const sqliteCheckpointRetry = time.Second

// sqliteWriterCacheKiB is the writer's page cache. A batch's table pages
// are written once and not read again, so the cache need not hold a whole
// batch (12 MB): with 32 MiB, a CPU profile of BenchmarkInsert/sqlite on 2
// cores had a fifth of Insert in zeroing new pages (_getPageNormal: fresh
// memory faulting in); 8 MiB stores 66.0-68.7k rows/s there against
// 56.1-61.5k, with no difference seen in the 16-core drain. SQLite's 2 MB
// default did about as well; it had cost a third of the writer's time in
// an earlier build, which checkpointed inside the writer's commits.
const sqliteWriterCacheKiB = 8 << 10

// sqliteReaders bounds the read-only connections (reports, dashboard reads).
const sqliteReaders = 4

var sqliteMigrations = []migration{
	{version: 1, stmts: []string{
		`CREATE TABLE IF NOT EXISTS selection_metrics (
	timestamp             TEXT    NOT NULL,
	task_category         TEXT    NOT NULL,
	selected_model        TEXT    NOT NULL,
	primary_category      BOOLEAN NOT NULL,
	confidence_score      REAL    NOT NULL,
	final_score           REAL    NOT NULL,
	gpu_id                INTEGER,
	selection_duration_ms REAL    NOT NULL,
	event_id              TEXT    NOT NULL PRIMARY KEY,
	request_id            TEXT,
	host                  TEXT,
	gpu_uuid              TEXT,
	mode                  TEXT    NOT NULL,
	requested_mode        TEXT    NOT NULL,
	degraded              BOOLEAN NOT NULL,
	reason                TEXT    NOT NULL,
	quality_score         REAL    NOT NULL,
	placement_score       REAL    NOT NULL,
	telemetry_age_ms      REAL    NOT NULL,
	selector              TEXT,
	event_json            TEXT    NOT NULL
)`,
		`CREATE INDEX IF NOT EXISTS selection_metrics_timestamp_idx ON selection_metrics (timestamp)`,
		`CREATE INDEX IF NOT EXISTS selection_metrics_category_model_idx ON selection_metrics (task_category, selected_model)`,
	}},
}

// migration is one schema version: its statements run in one transaction
// together with the schema_version row that records it.
type migration struct {
	version int
	stmts   []string
}

// SQLiteStore is the default store: one SQLite file in WAL mode, written
// through a single connection, checkpointed through another and read
// through a small read-only pool.
type SQLiteStore struct {
	path         string
	writer       *sql.DB
	reader       *sql.DB
	checkpointer *sql.DB
	// committed wakes the checkpointer after a commit.
	committed       chan struct{}
	stopCheckpoints chan struct{}
	checkpointsDone chan struct{}
	closeOnce       sync.Once
	// walLimitFrames is sqliteWALLimitFrames; tests lower it.
	walLimitFrames int64
	// walFrames is the WAL's length at the last checkpoint.
	walFrames atomic.Int64
	// checkpointing lets one checkpoint run at a time: SQLite refuses a
	// second (busy) without copying anything.
	checkpointing sync.Mutex
	// checkpointErr is the last checkpoint's error, nil after a good one.
	checkpointErr atomic.Pointer[error]
}

// OpenSQLite opens (creating it and its directory if needed) and migrates the
// SQLite database file at path.
func OpenSQLite(ctx context.Context, path string) (*SQLiteStore, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: empty SQLite path", ErrDatabaseURL)
	}
	// The writer and the readers are separate connections: they must meet in a file.
	if strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("%w: SQLite path %q must be a plain file path, not a memory database or URI", ErrDatabaseURL, path)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("%w: SQLite path %q must not contain '?' or '#'", ErrDatabaseURL, path)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("%w: sqlite %s: %w", ErrOpenStore, path, err)
		}
	}
	// The writer leaves checkpoints to checkpointLoop (wal_autocheckpoint 0)
	// unless the WAL grew past sqliteWALLimitFrames.
	writer, err := sql.Open("sqlite", path+"?"+sqlitePragmas+fmt.Sprintf(
		"&_pragma=page_size(%d)&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(%d)&_pragma=cache_size(-%d)",
		sqlitePageSize, sqliteWALLimitFrames*sqlitePageSize, sqliteWriterCacheKiB))
	if err != nil {
		return nil, fmt.Errorf("%w: sqlite %s: %w", ErrOpenStore, path, err)
	}
	// One writer: SQLite serialises writes anyway, and one connection keeps
	// batches from queueing on the file lock.
	writer.SetMaxOpenConns(1)
	s := &SQLiteStore{path: path, writer: writer}
	// WAL lets readers run beside the writer. It is set here, after the
	// connection's page_size: set with it in the DSN it fixes a new file's
	// page size at the default first.
	var mode string
	if err := writer.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil || mode != "wal" {
		_ = writer.Close()
		return nil, fmt.Errorf("%w: sqlite %s: set WAL mode: got %q, %v", ErrOpenStore, path, mode, err)
	}
	if err := s.migrate(ctx); err != nil {
		_ = writer.Close()
		return nil, err
	}
	reader, err := sql.Open("sqlite", path+"?"+sqlitePragmas+"&_pragma=query_only(1)")
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("%w: sqlite %s: %w", ErrOpenStore, path, err)
	}
	reader.SetMaxOpenConns(sqliteReaders)
	s.reader = reader
	checkpointer, err := sql.Open("sqlite", path+"?"+sqlitePragmas)
	if err != nil {
		_ = errors.Join(reader.Close(), writer.Close())
		return nil, fmt.Errorf("%w: sqlite %s: %w", ErrOpenStore, path, err)
	}
	checkpointer.SetMaxOpenConns(1)
	s.checkpointer = checkpointer
	s.walLimitFrames = sqliteWALLimitFrames
	s.committed = make(chan struct{}, 1)
	s.stopCheckpoints = make(chan struct{})
	s.checkpointsDone = make(chan struct{})
	go s.checkpointLoop()
	return s, nil
}

// checkpointLoop copies the WAL back into the database file after each
// commit, on its own connection, beside the writer: done inside the
// writer's commit (SQLite's autocheckpoint) it took a quarter of the
// writer's time. PASSIVE never waits for the writer or readers. A failed
// checkpoint is tried again every sqliteCheckpointRetry, so that an idle
// sink does not keep reporting it.
func (s *SQLiteStore) checkpointLoop() {
	defer close(s.checkpointsDone)
	retry := time.NewTicker(sqliteCheckpointRetry)
	defer retry.Stop()
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-s.committed:
		case <-retry.C:
			if s.checkpointErr.Load() == nil {
				continue
			}
		}
		s.checkpoint(s.checkpointer)
	}
}

// checkpoint runs a PASSIVE checkpoint on db and records the WAL's length
// and the error, if any. One that could not copy everything (a reader or
// the writer in the way) is not an error: the next one goes on.
func (s *SQLiteStore) checkpoint(db *sql.DB) {
	s.checkpointing.Lock()
	defer s.checkpointing.Unlock()
	var busy, walFrames, copied int64
	if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &walFrames, &copied); err != nil {
		err = fmt.Errorf("checkpoint: %w", err)
		s.checkpointErr.Store(&err)
		return
	}
	if walFrames >= 0 { // -1: SQLite could not start one
		s.walFrames.Store(walFrames)
	}
	s.checkpointErr.Store(nil)
}

func (s *SQLiteStore) migrate(ctx context.Context) error {
	fail := func(err error) error { return fmt.Errorf("%w: sqlite %s: migrate: %w", ErrOpenStore, s.path, err) }
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version    INTEGER NOT NULL PRIMARY KEY,
	applied_at TEXT    NOT NULL
)`); err != nil {
		return fail(err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return fail(err)
	}
	if latest := sqliteMigrations[len(sqliteMigrations)-1].version; current > latest {
		return fail(fmt.Errorf("schema version %d is newer than this sink's %d", current, latest))
	}
	for _, m := range sqliteMigrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fail(fmt.Errorf("version %d: %w", m.version, err))
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
			m.version, time.Now().UTC().Format(sqliteTimeFormat)); err != nil {
			return fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return nil
}

// Insert writes recs in one transaction; already stored event ids are
// skipped. The commit wakes the checkpointer.
func (s *SQLiteStore) Insert(ctx context.Context, recs []Record) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	fail := func(err error) (int, error) { return 0, fmt.Errorf("%w: sqlite %s: %w", ErrInsert, s.path, err) }
	if s.walFrames.Load() >= s.walLimitFrames {
		s.checkpoint(s.writer) // see sqliteWALLimitFrames
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, insertSQL(false))
	if err != nil {
		return fail(err)
	}
	defer func() { _ = stmt.Close() }()
	inserted := 0
	for i := range recs {
		r := &recs[i]
		res, err := stmt.ExecContext(ctx, insertArgs(r, r.Event.Timestamp.UTC().Truncate(time.Microsecond).Format(sqliteTimeFormat))...)
		if err != nil {
			return fail(fmt.Errorf("event %s: %w", r.Event.EventID, err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fail(err)
		}
		inserted += int(n)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	select {
	case s.committed <- struct{}{}:
	default: // a checkpoint is already due
	}
	return inserted, nil
}

// Count returns the number of rows.
func (s *SQLiteStore) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.reader.QueryRowContext(ctx, `SELECT COUNT(*) FROM selection_metrics`).Scan(&n); err != nil {
		return 0, fmt.Errorf("%w: sqlite %s: count: %w", ErrQuery, s.path, err)
	}
	return n, nil
}

// Recent returns up to limit rows, newest first.
func (s *SQLiteStore) Recent(ctx context.Context, limit int) ([]Row, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: got %d", ErrBadLimit, limit)
	}
	fail := func(err error) ([]Row, error) {
		return nil, fmt.Errorf("%w: sqlite %s: recent: %w", ErrQuery, s.path, err)
	}
	rows, err := s.reader.QueryContext(ctx, recentSQL(false), limit)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = rows.Close() }()
	var out []Row
	for rows.Next() {
		var (
			r                                   Row
			ts, mode, reqMode, eventJSON        string
			gpuID                               sql.NullInt64
			requestID, host, gpuUUID, selectorN sql.NullString
		)
		if err := rows.Scan(&ts, &r.TaskCategory, &r.SelectedModel, &r.PrimaryCategory,
			&r.ConfidenceScore, &r.FinalScore, &gpuID, &r.SelectionDurationMs,
			&r.EventID, &requestID, &host, &gpuUUID, &mode, &reqMode,
			&r.Degraded, &r.Reason, &r.QualityScore, &r.PlacementScore,
			&r.TelemetryAgeMs, &selectorN, &eventJSON); err != nil {
			return fail(err)
		}
		if r.Timestamp, err = time.Parse(sqliteTimeFormat, ts); err != nil {
			return fail(fmt.Errorf("event %s: timestamp: %w", r.EventID, err))
		}
		if gpuID.Valid {
			id := int(gpuID.Int64)
			r.GPUID = &id
		}
		r.RequestID, r.Host, r.GPUUUID, r.Selector = requestID.String, host.String, gpuUUID.String, selectorN.String
		r.Mode, r.RequestedMode = selection.Mode(mode), selection.Mode(reqMode)
		if err := json.Unmarshal([]byte(eventJSON), &r.Event); err != nil {
			return fail(fmt.Errorf("event %s: event_json: %w", r.EventID, err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return out, nil
}

// Report runs a built-in report; the seed's queries run exactly as written.
func (s *SQLiteStore) Report(ctx context.Context, name string) (*ReportResult, error) {
	def, err := lookupReport(name)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ReportResult, error) {
		return nil, fmt.Errorf("%w: sqlite %s: report %s: %w", ErrQuery, s.path, name, err)
	}
	rows, err := s.reader.QueryContext(ctx, def.sqlite)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		return fail(err)
	}
	res := &ReportResult{Name: name, Columns: cols, Rows: [][]any{}}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fail(err)
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return res, nil
}

// Series buckets the rows of q's window (see Store.Series).
func (s *SQLiteStore) Series(ctx context.Context, q SeriesQuery) (*Series, error) {
	if err := q.validate(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Series, error) {
		return nil, fmt.Errorf("%w: sqlite %s: series: %w", ErrQuery, s.path, err)
	}
	args := []any{q.From.Unix(), int64(q.Step / time.Second),
		q.From.UTC().Format(sqliteTimeFormat), q.To().UTC().Format(sqliteTimeFormat)}
	b := newSeriesBuilder(q)
	err := s.scan(ctx, seriesSQL(seriesCountsTmpl, false), args, func(rows *sql.Rows) error {
		var (
			bucket, n       int64
			category, model string
		)
		if err := rows.Scan(&bucket, &category, &model, &n); err != nil {
			return err
		}
		b.addCount(bucket, category, model, n)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	err = s.scan(ctx, seriesSQL(seriesLatencyTmpl, false), args, func(rows *sql.Rows) error {
		var (
			bucket   int64
			p50, p99 sql.NullFloat64
		)
		if err := rows.Scan(&bucket, &p50, &p99); err != nil {
			return err
		}
		if p50.Valid && p99.Valid {
			b.addLatency(bucket, p50.Float64, p99.Float64)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return b.finish(), nil
}

// scan runs query on the read pool and calls row for each result row.
func (s *SQLiteStore) scan(ctx context.Context, query string, args []any, row func(*sql.Rows) error) error {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Ping reads selection_metrics through the read pool: the file opens and
// holds the table.
func (s *SQLiteStore) Ping(ctx context.Context) error {
	var one int
	err := s.reader.QueryRowContext(ctx, pingSQL).Scan(&one)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: sqlite %s: ping: %w", ErrQuery, s.path, err)
	}
	if cerr := s.checkpointErr.Load(); cerr != nil {
		return fmt.Errorf("%w: sqlite %s: %w", ErrQuery, s.path, *cerr)
	}
	return nil
}

// DB returns the read-only pool, for analysis SQL of one's own (the seed's
// queries as written, ad-hoc questions).
func (s *SQLiteStore) DB() *sql.DB { return s.reader }

// Close stops the checkpointer and closes the connections, the writer last:
// the last connection to close checkpoints and removes the WAL (when no
// reader is still open).
func (s *SQLiteStore) Close() error {
	s.closeOnce.Do(func() { close(s.stopCheckpoints) })
	<-s.checkpointsDone
	return errors.Join(s.reader.Close(), s.checkpointer.Close(), s.writer.Close())
}

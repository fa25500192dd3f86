package metricssink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// postgresConnectTimeout bounds one connection's dial, TLS and login
// where the URL sets no connect_timeout (NATS's is 5 s); a test shortens it.
var postgresConnectTimeout = 10 * time.Second

// postgresMigrationLock is the advisory lock key that serialises migrations
// when several sinks start at once against one database.
const postgresMigrationLock = 0x6f7263685f736e6b // "orch_snk"

var postgresMigrations = []migration{
	{version: 1, stmts: []string{
		`CREATE TABLE IF NOT EXISTS selection_metrics (
	timestamp             TIMESTAMPTZ      NOT NULL,
	task_category         TEXT             NOT NULL,
	selected_model        TEXT             NOT NULL,
	primary_category      BOOLEAN          NOT NULL,
	confidence_score      DOUBLE PRECISION NOT NULL,
	final_score           DOUBLE PRECISION NOT NULL,
	gpu_id                BIGINT,
	selection_duration_ms DOUBLE PRECISION NOT NULL,
	event_id              TEXT             NOT NULL PRIMARY KEY,
	request_id            TEXT,
	host                  TEXT,
	gpu_uuid              TEXT,
	mode                  TEXT             NOT NULL,
	requested_mode        TEXT             NOT NULL,
	degraded              BOOLEAN          NOT NULL,
	reason                TEXT             NOT NULL,
	quality_score         DOUBLE PRECISION NOT NULL,
	placement_score       DOUBLE PRECISION NOT NULL,
	telemetry_age_ms      DOUBLE PRECISION NOT NULL,
	selector              TEXT,
	event_json            JSONB            NOT NULL
)`,
		`CREATE INDEX IF NOT EXISTS selection_metrics_timestamp_idx ON selection_metrics (timestamp)`,
		`CREATE INDEX IF NOT EXISTS selection_metrics_category_model_idx ON selection_metrics (task_category, selected_model)`,
	}},
}

// PostgresStore keeps selection_metrics in PostgreSQL through a pgx pool.
// Several sinks may share one database (and the durable consumer).
type PostgresStore struct {
	where string
	pool  *pgxpool.Pool
	// notes are what opening found and worked around, for the sink to log.
	notes []string
	// rowByRow counts the batches that COPY could not take whole.
	rowByRow atomic.Uint64
}

// lz4LockTimeout bounds the wait for the table lock that setting event_json's
// compression takes: an analyst's long query must not hold a sink's start.
const lz4LockTimeout = "2s"

// OpenPostgres connects to the database at url (a postgres:// URL or a
// key=value DSN) and migrates it.
func OpenPostgres(ctx context.Context, url string) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors repeat the URL; say only that it was unreadable,
		// so a password never reaches a log.
		return nil, fmt.Errorf("%w: unreadable PostgreSQL URL", ErrDatabaseURL)
	}
	where := fmt.Sprintf("postgres %s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	_, envTimeout := os.LookupEnv("PGCONNECT_TIMEOUT")
	if !envTimeout && !strings.Contains(url, "connect_timeout") { // the URL's or the environment's wins, 0 too
		// A server that accepts and never answers would otherwise hold the
		// start (and every reconnect) with no word.
		cfg.ConnConfig.ConnectTimeout = postgresConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOpenStore, where, err)
	}
	s := &PostgresStore{where: where, pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	s.compressEventJSONWithLZ4(ctx)
	return s, nil
}

// compressEventJSONWithLZ4 makes the server compress event_json (2-3 KB,
// TOASTed) with lz4 instead of pglz where it has lz4 (PostgreSQL 14+ built
// with it): a fifth less work per row (BenchmarkIngest/postgres, 2 cores:
// 10.0-10.2k -> 12.4-12.9k rows/s). Rows stored before keep theirs. It is
// checked at every open rather than migrated once, so a server that gains
// lz4 later gets it then. Only an optimisation: where the sink's role does
// not own the table, or a query holds it past lz4LockTimeout, the column
// stays as it is and a note says why.
func (s *PostgresStore) compressEventJSONWithLZ4(ctx context.Context) {
	note := func(err error) {
		s.notes = append(s.notes, fmt.Sprintf("event_json stays compressed with pglz, not lz4: %v", err))
	}
	var hasLZ4 bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_settings
		WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))`).Scan(&hasLZ4); err != nil {
		note(err)
		return
	}
	if !hasLZ4 {
		return
	}
	var method string
	if err := s.pool.QueryRow(ctx, `SELECT attcompression::text FROM pg_attribute
		WHERE attrelid = 'selection_metrics'::regclass AND attname = 'event_json'`).Scan(&method); err != nil {
		note(err)
		return
	}
	if method == "l" {
		return
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+lz4LockTimeout+"'"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ALTER TABLE selection_metrics ALTER COLUMN event_json SET COMPRESSION lz4`)
		return err
	})
	if err != nil {
		note(err)
	}
}

// RowByRowBatches counts the batches COPY could not take whole, which went
// in row by row (orch_sink_row_by_row_batches_total): steadily rising, it
// means redeliveries, or values the server refuses.
func (s *PostgresStore) RowByRowBatches() uint64 { return s.rowByRow.Load() }

// OpenNotes returns what opening the store found and worked around.
func (s *PostgresStore) OpenNotes() []string { return s.notes }

func (s *PostgresStore) migrate(ctx context.Context) error {
	fail := func(err error) error { return fmt.Errorf("%w: %s: migrate: %w", ErrOpenStore, s.where, err) }
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(postgresMigrationLock)); err != nil {
		return fail(err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version    INTEGER     NOT NULL PRIMARY KEY,
	applied_at TIMESTAMPTZ NOT NULL
)`); err != nil {
		return fail(err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return fail(err)
	}
	if latest := postgresMigrations[len(postgresMigrations)-1].version; current > latest {
		return fail(fmt.Errorf("schema version %d is newer than this sink's %d", current, latest))
	}
	for _, m := range postgresMigrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fail(fmt.Errorf("version %d: %w", m.version, err))
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)`,
			m.version, time.Now()); err != nil {
			return fail(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// Insert writes recs with one COPY; already stored event ids are skipped.
// COPY cannot skip one, so a batch holding a stored event id (a
// redelivery, the same event twice in the batch, a batch retried after a
// refused row) or a value the server refuses goes in again, in a second
// transaction, row by row (insertRows): a value PostgreSQL refuses (a data
// exception, such as a NUL byte in a string) returns a *RowError naming the
// event.
//
// Both go in event_id order: sinks storing overlapping batches at once (a
// redelivery after AckWait while the first sink still writes) then wait on
// each other's rows in one order, where in their own orders each could hold
// a row the other waits for: a deadlock, which fails one batch.
func (s *PostgresStore) Insert(ctx context.Context, recs []Record) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	order := eventIDOrder(recs)
	n, err := s.copyRows(ctx, recs, order)
	if err == nil {
		return n, nil
	}
	if !postgresRowFault(err) {
		return 0, fmt.Errorf("%w: %s: %w", ErrInsert, s.where, err)
	}
	s.rowByRow.Add(1)
	return s.insertRows(ctx, recs, order)
}

// eventIDOrder returns the indexes of recs sorted by event id.
func eventIDOrder(recs []Record) []int {
	order := make([]int, len(recs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return strings.Compare(recs[a].Event.EventID, recs[b].Event.EventID)
	})
	return order
}

// copyRows stores recs with one COPY, a statement of its own and so all or
// nothing: the server writes them in multi-row inserts, with far fewer WAL
// records and extension-lock turns than one INSERT per row
// (pg_stat_activity sampled while 4 sinks inserted row by row: waiting in
// nearly two thirds of the samples, on WAL writes, the extension lock and
// index pages). Any row's fault fails it whole; a COPY that fails on a
// stored event_id has written rows that VACUUM then removes.
func (s *PostgresStore) copyRows(ctx context.Context, recs []Record, order []int) (int, error) {
	n, err := s.pool.CopyFrom(ctx, pgx.Identifier{"selection_metrics"}, columns,
		pgx.CopyFromSlice(len(order), func(i int) ([]any, error) {
			r := &recs[order[i]]
			return insertArgs(r, r.Event.Timestamp), nil
		}))
	return int(n), err
}

// insertRows writes recs in one transaction, in the given order, one INSERT
// ... ON CONFLICT DO NOTHING per row, pipelined in one round trip.
func (s *PostgresStore) insertRows(ctx context.Context, recs []Record, order []int) (int, error) {
	fail := func(err error) (int, error) { return 0, fmt.Errorf("%w: %s: %w", ErrInsert, s.where, err) }
	b := &pgx.Batch{}
	q := insertSQL(true)
	for _, i := range order {
		b.Queue(q, insertArgs(&recs[i], recs[i].Event.Timestamp)...)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	br := tx.SendBatch(ctx, b)
	inserted := 0
	for _, i := range order {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			id := recs[i].Event.EventID
			if postgresRowFault(err) {
				return 0, &RowError{Index: i, EventID: id, Err: err}
			}
			return fail(fmt.Errorf("event %s: %w", id, err))
		}
		inserted += int(tag.RowsAffected())
	}
	if err := br.Close(); err != nil {
		return fail(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(err)
	}
	return inserted, nil
}

// postgresRowFault tells errors caused by the row's values (SQLSTATE class 22
// data exception, 23 integrity, 54 program limit) from those of the server.
func postgresRowFault(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23") || strings.HasPrefix(pe.Code, "54")
}

// Count returns the number of rows.
func (s *PostgresStore) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM selection_metrics`).Scan(&n); err != nil {
		return 0, fmt.Errorf("%w: %s: count: %w", ErrQuery, s.where, err)
	}
	return n, nil
}

// Recent returns up to limit rows, newest first.
func (s *PostgresStore) Recent(ctx context.Context, limit int) ([]Row, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: got %d", ErrBadLimit, limit)
	}
	fail := func(err error) ([]Row, error) { return nil, fmt.Errorf("%w: %s: recent: %w", ErrQuery, s.where, err) }
	rows, err := s.pool.Query(ctx, recentSQL(true), limit)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var (
			r                                   Row
			mode, reqMode                       string
			gpuID                               *int64
			requestID, host, gpuUUID, selectorN *string
		)
		if err := rows.Scan(&r.Timestamp, &r.TaskCategory, &r.SelectedModel, &r.PrimaryCategory,
			&r.ConfidenceScore, &r.FinalScore, &gpuID, &r.SelectionDurationMs,
			&r.EventID, &requestID, &host, &gpuUUID, &mode, &reqMode,
			&r.Degraded, &r.Reason, &r.QualityScore, &r.PlacementScore,
			&r.TelemetryAgeMs, &selectorN, &r.Event); err != nil {
			return fail(err)
		}
		r.Timestamp = r.Timestamp.UTC()
		if gpuID != nil {
			id := int(*gpuID)
			r.GPUID = &id
		}
		r.RequestID, r.Host, r.GPUUUID, r.Selector = deref(requestID), deref(host), deref(gpuUUID), deref(selectorN)
		r.Mode, r.RequestedMode = selection.Mode(mode), selection.Mode(reqMode)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Report runs a built-in report (the seed's queries, with the one
// PostgreSQL-specific spelling noted at postgresMultiCategoryEffectivenessSQL).
func (s *PostgresStore) Report(ctx context.Context, name string) (*ReportResult, error) {
	def, err := lookupReport(name)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ReportResult, error) {
		return nil, fmt.Errorf("%w: %s: report %s: %w", ErrQuery, s.where, name, err)
	}
	rows, err := s.pool.Query(ctx, def.postgres)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	fields := rows.FieldDescriptions()
	res := &ReportResult{Name: name, Columns: make([]string, len(fields)), Rows: [][]any{}}
	for i, f := range fields {
		res.Columns[i] = f.Name
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return fail(err)
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return res, nil
}

// Series buckets the rows of q's window (see Store.Series).
func (s *PostgresStore) Series(ctx context.Context, q SeriesQuery) (*Series, error) {
	if err := q.validate(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Series, error) { return nil, fmt.Errorf("%w: %s: series: %w", ErrQuery, s.where, err) }
	args := []any{q.From.Unix(), int64(q.Step / time.Second), q.From, q.To()}
	b := newSeriesBuilder(q)
	var (
		bucket, n       int64
		category, model string
	)
	rows, err := s.pool.Query(ctx, seriesSQL(seriesCountsTmpl, true), args...)
	if err != nil {
		return fail(err)
	}
	_, err = pgx.ForEachRow(rows, []any{&bucket, &category, &model, &n}, func() error {
		b.addCount(bucket, category, model, n)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	var p50, p99 *float64
	rows, err = s.pool.Query(ctx, seriesSQL(seriesLatencyTmpl, true), args...)
	if err != nil {
		return fail(err)
	}
	_, err = pgx.ForEachRow(rows, []any{&bucket, &p50, &p99}, func() error {
		if p50 != nil && p99 != nil {
			b.addLatency(bucket, *p50, *p99)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return b.finish(), nil
}

// Ping reads selection_metrics: the server answers and holds the table.
func (s *PostgresStore) Ping(ctx context.Context) error {
	var one int
	err := s.pool.QueryRow(ctx, pingSQL).Scan(&one)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s: ping: %w", ErrQuery, s.where, err)
	}
	return nil
}

// Pool returns the connection pool, for analysis SQL of one's own.
func (s *PostgresStore) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}

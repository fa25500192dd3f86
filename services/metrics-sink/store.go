package metricssink

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	segjson "github.com/segmentio/encoding/json"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Store keeps selection events as rows of selection_metrics. Implementations
// are safe for concurrent use.
type Store interface {
	// Insert writes recs in one transaction. An event whose event_id is
	// already stored is skipped, so a redelivery never makes a second row;
	// inserted counts the new rows. On error nothing of the batch is kept.
	Insert(ctx context.Context, recs []Record) (inserted int, err error)
	// Count returns the number of rows.
	Count(ctx context.Context) (int64, error)
	// Recent returns up to limit rows, newest first.
	Recent(ctx context.Context, limit int) ([]Row, error)
	// Report runs the built-in report called name (see Reports).
	Report(ctx context.Context, name string) (*ReportResult, error)
	// Series counts the decisions per model and per category, and their
	// selection_duration_ms percentiles, in the buckets of q.
	Series(ctx context.Context, q SeriesQuery) (*Series, error)
	// Ping checks that the database answers and holds selection_metrics.
	Ping(ctx context.Context) error
	Close() error
}

// Row is one row of selection_metrics. Its JSON names are the column names;
// Event is the decoded event_json.
type Row struct {
	// Timestamp is stored with microsecond precision; Event keeps the exact one.
	Timestamp           time.Time             `json:"timestamp"`
	TaskCategory        string                `json:"task_category"`
	SelectedModel       string                `json:"selected_model"`
	PrimaryCategory     bool                  `json:"primary_category"`
	ConfidenceScore     float64               `json:"confidence_score"`
	FinalScore          float64               `json:"final_score"`
	GPUID               *int                  `json:"gpu_id"`
	SelectionDurationMs float64               `json:"selection_duration_ms"`
	EventID             string                `json:"event_id"`
	RequestID           string                `json:"request_id"`
	Host                string                `json:"host"`
	GPUUUID             string                `json:"gpu_uuid"`
	Mode                selection.Mode        `json:"mode"`
	RequestedMode       selection.Mode        `json:"requested_mode"`
	Degraded            bool                  `json:"degraded"`
	Reason              string                `json:"reason"`
	QualityScore        float64               `json:"quality_score"`
	PlacementScore      float64               `json:"placement_score"`
	TelemetryAgeMs      float64               `json:"telemetry_age_ms"`
	Selector            string                `json:"selector"`
	Event               events.SelectionEvent `json:"event"`
}

// columns lists selection_metrics in table order: the seed's eight columns
// first, then what replay and analysis need.
var columns = []string{
	"timestamp", "task_category", "selected_model", "primary_category",
	"confidence_score", "final_score", "gpu_id", "selection_duration_ms",
	"event_id", "request_id", "host", "gpu_uuid", "mode", "requested_mode",
	"degraded", "reason", "quality_score", "placement_score",
	"telemetry_age_ms", "selector", "event_json",
}

// columnList is columns joined for SELECT and INSERT.
var columnList = strings.Join(columns, ", ")

// placeholders returns "$1, $2, ..." (PostgreSQL) or "?, ?, ..." (SQLite) for columns.
func placeholders(numbered bool) string {
	p := make([]string, len(columns))
	for i := range p {
		if numbered {
			p[i] = fmt.Sprintf("$%d", i+1)
		} else {
			p[i] = "?"
		}
	}
	return strings.Join(p, ", ")
}

// insertSQL is the row insert of both stores: ON CONFLICT (event_id) DO NOTHING is
// what makes redelivery harmless.
func insertSQL(numbered bool) string {
	return "INSERT INTO selection_metrics (" + columnList + ") VALUES (" +
		placeholders(numbered) + ") ON CONFLICT (event_id) DO NOTHING"
}

// recentSQL is the newest-first read; event_id breaks timestamp ties so the
// order is stable.
func recentSQL(numbered bool) string {
	p := "?"
	if numbered {
		p = "$1"
	}
	return "SELECT " + columnList + " FROM selection_metrics ORDER BY timestamp DESC, event_id DESC LIMIT " + p
}

// pingSQL touches the table without reading it: LIMIT 1 costs the same on
// an empty table and a large one.
const pingSQL = "SELECT 1 FROM selection_metrics LIMIT 1"

// insertArgs returns the column values of r in table order; ts is the
// timestamp as the store's driver wants it. Optional strings that are empty
// become NULL, as gpu_id does without a GPU.
func insertArgs(r *Record, ts any) []any {
	ev := &r.Event
	var gpuID any
	if ev.GPUID != nil {
		gpuID = int64(*ev.GPUID)
	}
	return []any{
		ts, ev.TaskCategory, ev.SelectedModel, ev.PrimaryCategory,
		ev.ConfidenceScore, ev.FinalScore, gpuID, ev.SelectionDurationMs,
		ev.EventID, nullable(ev.RequestID), nullable(ev.Host), nullable(ev.GPUUUID),
		string(ev.Mode), string(ev.RequestedMode), ev.Degraded, ev.Reason,
		ev.Scores.Quality, ev.Scores.Placement, ev.TelemetryAgeMs,
		nullable(ev.Selector), r.JSON,
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Record is one selection event ready to store: Event fills the columns and
// JSON, its canonical encoding, is event_json. Encoding it while decoding
// keeps that work off the single database writer; a string, because that is
// what the drivers take, and the copy into one is made there too.
type Record struct {
	Event events.SelectionEvent
	JSON  string
}

// DecodeRecord parses a selection-event message into a Record: see NewRecord.
// segmentio's decoder behaves as encoding/json's (every field checked) at a
// third of the cost.
func DecodeRecord(data []byte) (Record, error) {
	var ev events.SelectionEvent
	if err := segjson.Unmarshal(data, &ev); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	return NewRecord(ev)
}

// NewRecord checks that ev can be stored (the row key and the seed's
// identifying columns present, values the columns hold) and encodes its
// event_json. An event Go decodes but cannot write back (a "+24:00" offset)
// is an ErrBadEvent: no row could show it.
func NewRecord(ev events.SelectionEvent) (Record, error) {
	if err := validateEvent(&ev); err != nil {
		return Record{}, err
	}
	js, err := ev.AppendJSON(nil)
	if err != nil {
		return Record{}, fmt.Errorf("%w: event %q: encode event_json: %w", ErrBadEvent, ev.EventID, err)
	}
	return Record{Event: ev, JSON: string(js)}, nil
}

func validateEvent(ev *events.SelectionEvent) error {
	var missing []string
	if ev.EventID == "" {
		missing = append(missing, "event_id")
	}
	if ev.Timestamp.IsZero() {
		missing = append(missing, "timestamp")
	}
	if ev.TaskCategory == "" {
		missing = append(missing, "task_category")
	}
	if ev.SelectedModel == "" {
		missing = append(missing, "selected_model")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: event %q lacks %s", ErrBadEvent, ev.EventID, strings.Join(missing, ", "))
	}
	// The numeric columns hold what the event schema allows: a 1e308 score
	// would overflow every AVG a report takes over it.
	var bad []string
	for _, f := range []struct {
		name   string
		v      float64
		lo, hi float64
	}{
		{"confidence_score", ev.ConfidenceScore, 0, 1},
		{"final_score", ev.FinalScore, 0, 1},
		{"scores.quality", ev.Scores.Quality, 0, 1},
		{"scores.placement", ev.Scores.Placement, 0, 1},
		{"selection_duration_ms", ev.SelectionDurationMs, 0, math.MaxFloat32},
		{"telemetry_age_ms", ev.TelemetryAgeMs, -1, math.MaxFloat32},
	} {
		if !(f.v >= f.lo && f.v <= f.hi) {
			bad = append(bad, fmt.Sprintf("%s %v outside %v..%v", f.name, f.v, f.lo, f.hi))
		}
	}
	if ev.GPUID != nil && *ev.GPUID < 0 {
		bad = append(bad, fmt.Sprintf("gpu_id %d is negative", *ev.GPUID))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: event %q: %s", ErrBadEvent, ev.EventID, strings.Join(bad, "; "))
	}
	// The column holds the UTC time: one in another year than 1..9999 there
	// could not be read back (a valid "9999-12-31T23:30:00-01:00" is year
	// 10000 in UTC).
	if y := ev.Timestamp.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: event %q: timestamp %s is outside years 1..9999 in UTC", ErrBadEvent, ev.EventID, ev.Timestamp.Format(time.RFC3339Nano))
	}
	return nil
}

// schemeRE matches a URL scheme; "C:" style drive letters are not a concern
// on the platforms the sink runs on.
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*):`)

// OpenStore opens and migrates the store named by url: "sqlite:PATH",
// "sqlite://PATH" or a plain file path open SQLite; "postgres://..." and
// "postgresql://..." open PostgreSQL. An empty url or any other scheme is an
// error wrapping ErrDatabaseURL (Config.DatabaseURL's default tag names the
// binary's file; a library caller names its own).
func OpenStore(ctx context.Context, url string) (Store, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: empty (use sqlite:PATH, a file path, or postgres://...; SINK_DATABASE_URL in the binary)", ErrDatabaseURL)
	}
	m := schemeRE.FindStringSubmatch(url)
	if m == nil {
		return OpenSQLite(ctx, url)
	}
	switch strings.ToLower(m[1]) {
	case "sqlite":
		path := strings.TrimPrefix(url[len(m[0]):], "//")
		return OpenSQLite(ctx, path)
	case "postgres", "postgresql":
		return OpenPostgres(ctx, url)
	default:
		return nil, fmt.Errorf("%w: scheme %q (use sqlite:PATH, a file path, or postgres://...)", ErrDatabaseURL, m[1])
	}
}

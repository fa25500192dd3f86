package metricssink

import (
	"errors"
	"fmt"
)

// Sentinel errors of the metrics-sink; callers test them with errors.Is.
var (
	// ErrDatabaseURL: the database URL names no store this sink can open.
	ErrDatabaseURL = errors.New("metricssink: unsupported database URL")
	// ErrOpenStore: the database could not be opened or migrated.
	ErrOpenStore = errors.New("metricssink: cannot open store")
	// ErrInsert: a batch could not be written; nothing of it was committed.
	ErrInsert = errors.New("metricssink: cannot insert batch")
	// ErrQuery: a read (report, count, recent rows) failed.
	ErrQuery = errors.New("metricssink: query failed")
	// ErrUnknownReport: no built-in report has the name asked for.
	ErrUnknownReport = errors.New("metricssink: unknown report")
	// ErrBadEvent: a message is not a storable selection-event (a poison message).
	ErrBadEvent = errors.New("metricssink: invalid selection-event")
	// ErrBadRow: the database refused one event's values (a data error such
	// as a NUL byte PostgreSQL cannot store); retrying cannot help. A
	// *RowError carrying it names the event.
	ErrBadRow = errors.New("metricssink: database refused the event")
	// ErrBadLimit: a row limit is not positive.
	ErrBadLimit = errors.New("metricssink: limit must be positive")
	// ErrConfig: the sink's settings cannot work.
	ErrConfig = errors.New("metricssink: bad config")
	// ErrConsumer: the durable consumer could not be created or read.
	ErrConsumer = errors.New("metricssink: consumer failed")
)

// RowError is an Insert failure caused by one event of the batch: the
// transaction was rolled back, and the batch without that event may succeed.
type RowError struct {
	// Index is the event's position in the batch given to Insert.
	Index   int
	EventID string
	Err     error
}

func (e *RowError) Error() string {
	return fmt.Sprintf("%v: event %s (batch index %d): %v", ErrBadRow, e.EventID, e.Index, e.Err)
}

// Unwrap lets errors.Is match both ErrBadRow and the driver's error.
func (e *RowError) Unwrap() []error { return []error{ErrBadRow, e.Err} }

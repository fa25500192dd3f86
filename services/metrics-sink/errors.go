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
	// ErrService: the micro service could not be started or stopped.
	ErrService = errors.New("metricssink: micro service failed")
	// ErrNotReady: the readiness check failed (no consumer yet, or the
	// database does not answer).
	ErrNotReady = errors.New("metricssink: not ready")
	// ErrTelemetry: the telemetry stream cannot be read, so the dashboard
	// knows no GPU; the sink keeps storing decisions and retries.
	ErrTelemetry = errors.New("metricssink: cannot read the telemetry stream")
	// ErrBadSeries: a time-series query has a step, window or start that
	// cannot be bucketed (see SeriesQuery).
	ErrBadSeries = errors.New("metricssink: bad series query")

	// Errors of the micro endpoints; each is one error code of the reply,
	// and the client helpers return the same sentinel for that code.

	// ErrBadRequest (400): a request body or value the endpoint cannot take.
	ErrBadRequest = errors.New("metricssink: bad request")
	// ErrUnavailable (503): the database failed to answer.
	ErrUnavailable = errors.New("metricssink: database unavailable")
	// ErrUnknownPath (404): no dashboard API under that path.
	ErrUnknownPath = errors.New("metricssink: no such API path")
	// ErrEncodeReply (500): the answer could not be encoded as JSON.
	ErrEncodeReply = errors.New("metricssink: cannot encode reply")
	// ErrRequest: a client request failed; every client helper error wraps
	// it (no responder, timeout, an error reply, an undecodable reply).
	ErrRequest = errors.New("metricssink: request failed")
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

// RemoteError is an error reply of a metrics-sink endpoint, as the client
// helpers return it. errors.Is matches ErrRequest and the sentinel of its
// code: ErrBadRequest, ErrUnknownReport, ErrUnavailable or ErrEncodeReply.
type RemoteError struct {
	Subject string
	// Code is the micro error code (bus.CodeBadRequest ...).
	Code string
	// Message is the error the sink gave (bus.ErrorBody.Error).
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%v: %s: error %s: %s", ErrRequest, e.Subject, e.Code, e.Message)
}

// Unwrap lets errors.Is match ErrRequest and the code's sentinel.
func (e *RemoteError) Unwrap() []error {
	for _, c := range errorCodes {
		if c.code == e.Code {
			return []error{ErrRequest, c.err}
		}
	}
	return []error{ErrRequest}
}

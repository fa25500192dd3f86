package metricssink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// ClientTimeout bounds a client request whose ctx has no deadline; it
// exceeds DefaultRequestTimeout so that the sink's own 503 arrives first.
const ClientTimeout = DefaultRequestTimeout + 10*time.Second

// ListReports asks a metrics-sink which built-in reports it runs.
func ListReports(ctx context.Context, nc *nats.Conn) ([]ReportInfo, error) {
	var out []ReportInfo
	if err := request(ctx, nc, SubjectReportsList, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RunReport runs the built-in report name on a metrics-sink. An unknown name
// is a *RemoteError matching ErrUnknownReport that lists the valid ones.
// Numbers in the rows arrive as float64 (JSON), counts included.
func RunReport(ctx context.Context, nc *nats.Conn, name string) (*ReportResult, error) {
	var out ReportResult
	if err := request(ctx, nc, SubjectReportsRun, RunReportRequest{Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Recent returns the newest limit rows (1..MaxRecentLimit), newest first; a
// limit out of range is a *RemoteError matching ErrBadRequest.
func Recent(ctx context.Context, nc *nats.Conn, limit int) ([]Row, error) {
	var out []Row
	if err := request(ctx, nc, SubjectRecent, RecentRequest{Limit: &limit}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// FetchStats returns the ingest stats of the metrics-sink that answers (one
// instance of the queue group).
func FetchStats(ctx context.Context, nc *nats.Conn) (*Stats, error) {
	var out Stats
	if err := request(ctx, nc, SubjectStats, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// request sends body (nil: an empty body) to subject and decodes the reply
// into out. Every error wraps ErrRequest; error replies are *RemoteError.
func request(ctx context.Context, nc *nats.Conn, subject string, body, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%w: %s: encode request: %w", ErrRequest, subject, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ClientTimeout)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRequest, subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		re := &RemoteError{Subject: subject, Code: code, Message: msg.Header.Get(micro.ErrorHeader)}
		var eb bus.ErrorBody
		if json.Unmarshal(msg.Data, &eb) == nil && eb.Error != "" {
			re.Message = eb.Error
		}
		return re
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("%w: %s: decode reply: %w", ErrRequest, subject, err)
	}
	return nil
}

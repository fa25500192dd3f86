package metricssink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// The sink's micro service (`nats micro info metrics-sink`) and its
// endpoints. Request and reply bodies are JSON:
//
//	SubjectReportsList  any body           -> []ReportInfo
//	SubjectReportsRun   RunReportRequest   -> ReportResult (404 for an unknown name)
//	SubjectRecent       RecentRequest      -> []Row, newest first
//	SubjectStats        any body           -> Stats of the instance that answers
//
// Errors are micro errors (bus.Code*) with a bus.ErrorBody: 400 for a
// malformed body or a limit out of range, 404 for an unknown report, 503
// when the database fails.
const (
	ServiceName    = "metrics-sink"
	ServiceVersion = "1.0.0"
	// QueueGroup: sinks sharing one PostgreSQL database take turns answering.
	QueueGroup = "metrics-sink"

	// SubjectPrefix is the micro group of every endpoint.
	SubjectPrefix      = bus.Prefix + ".sink"
	SubjectReportsList = SubjectPrefix + ".reports.list"
	SubjectReportsRun  = SubjectPrefix + ".reports.run"
	SubjectRecent      = SubjectPrefix + ".recent"
	SubjectStats       = SubjectPrefix + ".stats"
)

// Row limits of SubjectRecent.
const (
	DefaultRecentLimit = 20
	MaxRecentLimit     = 1000
)

// RunReportRequest is the body of SubjectReportsRun.
type RunReportRequest struct {
	// Name is a built-in report's name (see Reports).
	Name string `json:"name"`
}

// RecentRequest is the body of SubjectRecent; an empty body or no limit
// means DefaultRecentLimit.
type RecentRequest struct {
	// Limit must be in 1..MaxRecentLimit.
	Limit *int `json:"limit,omitempty"`
}

// errorCodes maps the endpoint sentinels to their micro error codes, for
// the service's replies and the client's errors alike.
var errorCodes = []struct {
	code string
	err  error
}{
	{bus.CodeBadRequest, ErrBadRequest},
	{bus.CodeNotFound, ErrUnknownReport},
	{bus.CodeNotFound, ErrUnknownPath},
	{bus.CodeNotReady, ErrUnavailable},
	{bus.CodeInternal, ErrEncodeReply},
}

// publicMessage is what a dashboard API caller reads: the error itself,
// except for a server-side failure, whose detail (a database URL, a file
// path, driver text) stays in the log and the caller gets its kind. The
// micro endpoints, which NATS accounts guard, keep the detail for operators.
func publicMessage(err error, code string) string {
	if code < "500" {
		return err.Error()
	}
	for _, c := range errorCodes {
		if c.code == code && errors.Is(err, c.err) {
			return c.err.Error() + " (the metrics-sink log has the details)"
		}
	}
	return "metricssink: internal error (the metrics-sink log has the details)"
}

// codeOf is the micro error code of a handler error.
func codeOf(err error) string {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return bus.CodeInternal
}

// handlerFunc answers one request: the body in, the value to send as JSON out.
type handlerFunc func(ctx context.Context, body []byte) (any, error)

type endpoint struct {
	name, subject string
	handle        handlerFunc
}

func (s *Service) endpoints() []endpoint {
	return []endpoint{
		{"reports-list", SubjectReportsList, s.listReports},
		{"reports-run", SubjectReportsRun, s.runReport},
		{"recent", SubjectRecent, s.recent},
		{"stats", SubjectStats, s.statsReply},
	}
}

// startService adds the micro service and its endpoints; handlers run
// under ctx, so they end with Run.
func (s *Service) startService(ctx context.Context) (micro.Service, error) {
	svc, err := micro.AddService(s.js.Conn(), micro.Config{
		Name:         ServiceName,
		Version:      ServiceVersion,
		Description:  "selection decisions in SQL: the seed's reports, recent rows, ingest stats",
		QueueGroup:   QueueGroup,
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("metrics-sink endpoint error")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: add %s: %w", ErrService, ServiceName, err)
	}
	g := svc.AddGroup(SubjectPrefix)
	for _, ep := range s.endpoints() {
		h := micro.ContextHandler(ctx, func(ctx context.Context, req micro.Request) { s.serve(ctx, ep, req) })
		rel := strings.TrimPrefix(ep.subject, SubjectPrefix+".")
		if err := g.AddEndpoint(ep.name, h, micro.WithEndpointSubject(rel)); err != nil {
			return nil, errors.Join(fmt.Errorf("%w: add endpoint %s: %w", ErrService, ep.subject, err), svc.Stop())
		}
	}
	return svc, nil
}

// serve runs one request within the request timeout and replies.
func (s *Service) serve(ctx context.Context, ep endpoint, req micro.Request) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := bus.Guard(s.log, ep.subject, func() (any, error) { return ep.handle(ctx, req.Data()) })
	if err == nil {
		var data []byte
		if data, err = json.Marshal(res); err == nil {
			if rErr := req.Respond(data); rErr != nil {
				s.log.Warn().Err(rErr).Str("subject", ep.subject).Msg("cannot send reply")
			}
			return
		}
		err = fmt.Errorf("%w: %s: %w", ErrEncodeReply, ep.subject, err)
	}
	code := codeOf(err)
	ev := s.log.Debug()
	if code >= "500" {
		ev = s.log.Error()
	}
	ev.Err(err).Str("subject", ep.subject).Str("code", code).Msg("request failed")
	// The description travels in a header: keep it to one line.
	desc := strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", " ").Replace(err.Error())
	body, _ := json.Marshal(bus.ErrorBody{Error: desc}) // a struct of one string always encodes
	if rErr := req.Error(code, desc, body); rErr != nil {
		s.log.Warn().Err(rErr).Str("subject", ep.subject).Msg("cannot send error reply")
	}
}

// decodeBody reads a JSON request body into v, strictly (no unknown fields,
// nothing after it): a typo must not silently become a default. An empty
// body leaves v as it is.
func decodeBody(subject string, body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: body: %w", ErrBadRequest, subject, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: body: data after the JSON value", ErrBadRequest, subject)
	}
	return nil
}

func (s *Service) listReports(context.Context, []byte) (any, error) {
	return Reports(), nil
}

func (s *Service) runReport(ctx context.Context, body []byte) (any, error) {
	var r RunReportRequest
	if err := decodeBody(SubjectReportsRun, body, &r); err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, fmt.Errorf("%w: %s: name is missing (valid: %s)", ErrBadRequest, SubjectReportsRun, reportNames())
	}
	return s.report(ctx, r.Name)
}

// report runs a built-in report for an endpoint or the dashboard API.
func (s *Service) report(ctx context.Context, name string) (*ReportResult, error) {
	// An unknown name is refused before any query, so it is a 404 even
	// while the database is down.
	if _, err := lookupReport(name); err != nil {
		return nil, err
	}
	res, err := s.store.Report(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return res, nil
}

func (s *Service) recent(ctx context.Context, body []byte) (any, error) {
	var r RecentRequest
	if err := decodeBody(SubjectRecent, body, &r); err != nil {
		return nil, err
	}
	limit := DefaultRecentLimit
	if r.Limit != nil {
		limit = *r.Limit
	}
	return s.recentRows(ctx, SubjectRecent, limit)
}

// recentRows reads the newest limit rows for an endpoint or the dashboard
// API (where names it in errors).
func (s *Service) recentRows(ctx context.Context, where string, limit int) ([]Row, error) {
	if limit < 1 || limit > MaxRecentLimit {
		return nil, fmt.Errorf("%w: %s: limit %d is outside 1..%d", ErrBadRequest, where, limit, MaxRecentLimit)
	}
	rows, err := s.store.Recent(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if rows == nil {
		rows = []Row{} // an empty table is [], not null
	}
	return rows, nil
}

func (s *Service) statsReply(context.Context, []byte) (any, error) {
	return s.Stats(), nil
}

// Package client is the Go client nFlow (or any service) uses to ask the
// selector which model and GPU should run a task.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	c := client.New(nc)
//	reply, err := c.Select(ctx, selection.Request{TaskCategory: "code"})
//	switch {
//	case errors.Is(err, client.ErrNoCandidate): // relax the constraints
//	case err != nil:                            // retry or fail the task
//	default: run reply.ModelID on reply.GPU
//	}
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Sentinel errors, one per selector error code, plus transport failures.
var (
	// ErrBadRequest (400): the request is malformed or out of range.
	ErrBadRequest = errors.New("selector refused the request (400)")
	// ErrNotFound (404): unknown task category, or allow_models names an
	// unregistered model.
	ErrNotFound = errors.New("selector does not know the task category or model (404)")
	// ErrNoCandidate (422): nothing satisfies the constraints.
	ErrNoCandidate = errors.New("no model satisfies the constraints (422)")
	// ErrNotReady (503): the selector has no registry loaded yet.
	ErrNotReady = errors.New("selector is not ready (503)")
	// ErrInternal (500 or an unknown code).
	ErrInternal = errors.New("selector failed (500)")
	// ErrNoSelector: no selector is serving the subject.
	ErrNoSelector = errors.New("no selector is serving")
	// ErrTimeout: no reply before the deadline.
	ErrTimeout = errors.New("selector did not reply in time")
	// ErrBadReply: the reply is not a selection-reply.
	ErrBadReply = errors.New("unreadable selector reply")
)

// ServiceError is an error reply from the selector. It wraps the sentinel of
// its code, so errors.Is(err, client.ErrNoCandidate) works.
type ServiceError struct {
	Code        string
	Description string
	// NoCandidate, on 422, counts what each filter rejected.
	NoCandidate *selection.NoCandidateError
}

func (e *ServiceError) Error() string { return e.Unwrap().Error() + ": " + e.Description }

// Unwrap is the sentinel of Code (ErrInternal for a code the selector does
// not send).
func (e *ServiceError) Unwrap() error {
	switch e.Code {
	case bus.CodeBadRequest:
		return ErrBadRequest
	case bus.CodeNotFound:
		return ErrNotFound
	case bus.CodeUnprocessable:
		return ErrNoCandidate
	case bus.CodeNotReady:
		return ErrNotReady
	default:
		return ErrInternal
	}
}

// Client sends selection requests. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	subject string
	timeout time.Duration
}

// Option tunes a Client.
type Option func(*Client)

// WithSubject overrides the selection subject (default orch.select).
func WithSubject(s string) Option { return func(c *Client) { c.subject = s } }

// WithTimeout sets the deadline used when ctx has none (default 2s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// New returns a client on an open connection.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, subject: bus.SelectSubject, timeout: 2 * time.Second}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Select asks for a model (and GPU) for req.
func (c *Client) Select(ctx context.Context, req selection.Request) (*selection.Reply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: encode request: %w", ErrBadRequest, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, c.subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w %s", ErrNoSelector, c.subject)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, fmt.Errorf("%w (%s): %w", ErrTimeout, c.subject, err)
	case err != nil:
		return nil, fmt.Errorf("request %s: %w", c.subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return nil, serviceError(code, msg)
	}
	var rep selection.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	if rep.ModelID == "" || rep.EventID == "" { // JSON, but no selection-reply ("null", "{}")
		return nil, fmt.Errorf("%w: no model_id or event_id in %.100q", ErrBadReply, msg.Data)
	}
	return &rep, nil
}

func serviceError(code string, msg *nats.Msg) error {
	e := &ServiceError{Code: code, Description: msg.Header.Get(micro.ErrorHeader)}
	var body struct {
		NoCandidate *selection.NoCandidateError `json:"no_candidate"`
	}
	if json.Unmarshal(msg.Data, &body) == nil {
		e.NoCandidate = body.NoCandidate
	}
	return e
}

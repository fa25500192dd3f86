package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/client"
)

// ServiceError is a micro error reply: its code, its one-line description
// and every problem its bus.ErrorBody lists.
type ServiceError struct {
	Subject     string
	Code        string
	Description string
	Problems    []string
}

func (e *ServiceError) Error() string {
	name := codeName(e.Code)
	// Services word their errors from their own sentinels ("bad request:
	// ..."): say the code's name once.
	return fmt.Sprintf("%s answered %s %s: %s", e.Subject, e.Code, name, strings.TrimPrefix(e.Description, name+": "))
}

func codeName(code string) string {
	switch code {
	case bus.CodeBadRequest:
		return "bad request"
	case bus.CodeNotFound:
		return "not found"
	case bus.CodeUnprocessable:
		return "refused"
	case bus.CodeNotReady:
		return "unavailable"
	default:
		return "failed"
	}
}

// request sends body (nil: empty; []byte and json.RawMessage as they are;
// anything else as JSON) to a micro endpoint and decodes the reply into out
// (unless nil). An error reply is a *ServiceError.
func (a *app) request(ctx context.Context, nc *nats.Conn, subject string, body, out any) error {
	var data []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		data = b
	case json.RawMessage:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			return fmt.Errorf("encode request to %s: %w", subject, err)
		}
	}
	if limit := nc.MaxPayload(); limit > 0 && int64(len(data)) > limit {
		return fmt.Errorf("%w: the request to %s is %s; the NATS server takes at most %s per message (its max_payload)",
			ErrTooLarge, subject, fmtSize(int64(len(data))), fmtSize(limit))
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w on %s (is the service running? `orchestrator serve` runs them all)", ErrNoService, subject)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w from %s after %s (raise --timeout?)", ErrTimeout, subject, a.timeout)
	case err != nil:
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		se := &ServiceError{Subject: subject, Code: code, Description: msg.Header.Get(micro.ErrorHeader)}
		var body bus.ErrorBody
		if json.Unmarshal(msg.Data, &body) == nil {
			se.Problems = body.Problems
			if body.Error != "" {
				se.Description = body.Error
			}
		}
		return se
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("%w from %s: %w", ErrBadReply, subject, err)
	}
	return nil
}

// change sends a request that changes something (see request). Without a
// reply in time, or interrupted while waiting (Ctrl-C), the change may still
// have been applied, only its answer lost or late: the error says so, names
// how to look, and exits 3.
func (a *app) change(ctx context.Context, nc *nats.Conn, subject string, body, out any, check string) error {
	err := a.request(ctx, nc, subject, body, out)
	if errors.Is(err, ErrTimeout) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w; the change may have been applied: look with `%s` before trying again", ErrOutcomeUnknown, err, check)
	}
	return err
}

// fmtSize writes a byte count for people: 1.3 MiB, 512 KiB, 300 B.
func fmtSize(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// printError writes err and, for a service error, each problem it lists.
func printError(w io.Writer, err error) {
	fmt.Fprintln(w, "error:", err)
	var se *ServiceError
	if errors.As(err, &se) {
		for _, p := range se.Problems {
			fmt.Fprintln(w, "  -", p)
		}
	}
	var ce *client.ServiceError
	if errors.As(err, &ce) && ce.NoCandidate != nil {
		nc := ce.NoCandidate
		fmt.Fprintf(w, "  %d model(s) serve %q in %s mode", nc.Models, nc.TaskCategory, nc.Mode)
		if nc.GPUs > 0 {
			fmt.Fprintf(w, ", on %d GPU(s)", nc.GPUs)
		}
		fmt.Fprintln(w)
		for _, k := range sortedKeys(nc.ModelRejects) {
			fmt.Fprintf(w, "  - %d model(s) rejected by %s\n", nc.ModelRejects[k], k)
		}
		for _, k := range sortedKeys(nc.GPURejects) {
			fmt.Fprintf(w, "  - %d GPU(s) rejected by %s\n", nc.GPURejects[k], k)
		}
		if nc.MemoryMisfits > 0 {
			fmt.Fprintf(w, "  - %d model/GPU pair(s) lacked free memory\n", nc.MemoryMisfits)
		}
	}
}

package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/schemas"
)

// listError is an error with the lines a client is shown as its problems,
// e.g. every rule a config breaks or the keys an interrupted import wrote.
// Its text is err's; it unwraps to err and to cause, whose text is in lines.
type listError struct {
	err   error
	cause error
	lines []string
}

func (e *listError) Error() string   { return e.err.Error() }
func (e *listError) Unwrap() []error { return []error{e.err, e.cause} }

// schemaError reports the violations of a document that breaks its schema
// (400); other errors of schemas.Validate (not JSON) are returned wrapped.
func schemaError(what string, err error) error {
	var sv *schemas.ValidationError
	if !errors.As(err, &sv) || len(sv.Violations) == 0 {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, what, err)
	}
	lines := make([]string, len(sv.Violations))
	for i, v := range sv.Violations {
		lines[i] = v.Location() + ": " + v.Message
	}
	return &listError{err: fmt.Errorf("%w: %s: %s", ErrBadRequest, what, lines[0]), cause: err, lines: lines}
}

// codeOf picks the micro error code of a request error.
func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrBadRequest):
		return bus.CodeBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, catalog.ErrNotFound):
		return bus.CodeNotFound
	case errors.Is(err, ErrRefused):
		return bus.CodeUnprocessable
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrConflict), errors.Is(err, ErrPartialWrite):
		return bus.CodeNotReady
	default:
		return bus.CodeInternal
	}
}

// problemsOf lists every problem an error carries, one line each.
func problemsOf(err error) []string {
	var le *listError
	if errors.As(err, &le) {
		return le.lines
	}
	var cv *catalog.ValidationError
	if errors.As(err, &cv) {
		out := make([]string, len(cv.Problems))
		for i, p := range cv.Problems {
			out[i] = p.Error()
		}
		return out
	}
	return nil
}

// errorBody is the micro error of a request error: the code, a one-line
// description and the JSON body with every problem.
func errorBody(err error) (code, description string, body bus.ErrorBody) {
	problems := problemsOf(err)
	first, _, _ := strings.Cut(err.Error(), "\n")
	// A header value cannot hold a line break; Cut leaves none but \r.
	first = strings.ReplaceAll(first, "\r", " ")
	// Say that the header is the first of several problems; the keys an
	// interrupted write lists are no problems, and its message counts them.
	if len(problems) > 1 && !errors.Is(err, ErrPartialWrite) {
		first = fmt.Sprintf("%s (and %d more problem(s))", first, len(problems)-1)
	}
	return codeOf(err), first, bus.ErrorBody{Error: first, Problems: problems}
}

// respondError sends err back as a micro error.
func respondError(req micro.Request, err error) error {
	code, desc, body := errorBody(err)
	data, mErr := json.Marshal(body)
	if mErr != nil {
		return errors.Join(mErr, req.Error(code, desc, nil))
	}
	return req.Error(code, desc, data)
}

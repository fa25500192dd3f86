package bus

import (
	"fmt"
	"runtime/debug"

	"github.com/rs/zerolog"
)

// Guard runs one request's handler and turns a panic into an error wrapping
// ErrPanic, logged with its stack: micro does not recover handlers, and a
// bug met by one request must not end the service for every other.
func Guard(log zerolog.Logger, endpoint string, handle func() (any, error)) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error().Str("endpoint", endpoint).Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("request panicked; answered 500")
			res, err = nil, fmt.Errorf("%w: %s failed on this request (the service's log has the details)", ErrPanic, endpoint)
		}
	}()
	return handle()
}

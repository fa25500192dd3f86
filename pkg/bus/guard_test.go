package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

func TestGuard(t *testing.T) {
	var logs strings.Builder
	lg := zerolog.New(&logs)
	if got, err := bus.Guard(lg, "fine", func() (any, error) { return 7, nil }); got != 7 || err != nil {
		t.Fatalf("Guard of a handler that returns = %v, %v; want 7, nil", got, err)
	}
	got, err := bus.Guard(lg, "models.put", func() (any, error) { panic("boom") })
	if got != nil || !errors.Is(err, bus.ErrPanic) || !strings.Contains(err.Error(), "models.put") {
		t.Fatalf("Guard of a handler that panics = %v, %v; want nil and ErrPanic naming the endpoint", got, err)
	}
	if !strings.Contains(logs.String(), `"panic":"boom"`) || !strings.Contains(logs.String(), "guard_test.go") {
		t.Fatalf("the log lacks the panic or its stack: %s", logs.String())
	}
}

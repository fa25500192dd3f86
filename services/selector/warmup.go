package selector

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// warmup tracks which sources have delivered their initial state.
type warmup struct {
	mu      sync.Mutex
	pending map[string]bool
	all     chan struct{}
}

func newWarmup() *warmup { return &warmup{pending: map[string]bool{}, all: make(chan struct{})} }

// done registers a source and returns the function that marks it warm
// (safe to call more than once).
func (w *warmup) done(source string) func() {
	w.mu.Lock()
	w.pending[source] = true
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.pending[source] {
			return
		}
		delete(w.pending, source)
		if len(w.pending) == 0 {
			close(w.all)
		}
	}
}

func (w *warmup) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.all:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrWarmup, ctx.Err())
	case <-t.C:
		w.mu.Lock()
		var missing []string
		for s := range w.pending {
			missing = append(missing, s)
		}
		w.mu.Unlock()
		slices.Sort(missing)
		return fmt.Errorf("%w: no initial state from %s after %s", ErrWarmup, strings.Join(missing, ", "), timeout)
	}
}

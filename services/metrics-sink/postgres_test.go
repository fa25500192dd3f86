package metricssink

import (
	"errors"
	"testing"
)

// TestPostgresRefusedValue: PostgreSQL cannot store a NUL byte; the store
// names the event, commits nothing, and the batch without it goes in.
func TestPostgresRefusedValue(t *testing.T) {
	s := openStore(t, postgresURL(t))
	ctx := testCtx(t)
	batch := makeEvents(0, 3)
	batch[1].Reason = "bad \x00 byte"
	_, err := s.Insert(ctx, records(t, batch))
	var re *RowError
	if !errors.As(err, &re) || !errors.Is(err, ErrBadRow) {
		t.Fatalf("error = %v, want a *RowError wrapping ErrBadRow", err)
	}
	if re.Index != 1 || re.EventID != batch[1].EventID {
		t.Fatalf("RowError names index %d event %s, want 1 %s", re.Index, re.EventID, batch[1].EventID)
	}
	if c, err := s.Count(ctx); err != nil || c != 0 {
		t.Fatalf("Count = %d, %v; want 0 (rolled back)", c, err)
	}
	if n, err := s.Insert(ctx, records(t, append(batch[:1:1], batch[2]))); err != nil || n != 2 {
		t.Fatalf("Insert without the bad event = %d, %v; want 2", n, err)
	}
}

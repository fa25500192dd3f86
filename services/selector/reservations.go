package selector

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// shareInterval is how often a replica sends the reservations it made: one
// message per interval instead of one per selection, and short next to the
// seconds between two samples of a GPU.
const shareInterval = 10 * time.Millisecond

// sharer batches this replica's reservations for the other replicas.
type sharer struct {
	nc      *nats.Conn
	log     zerolog.Logger
	mu      sync.Mutex
	pending []selection.Reservation
}

func (s *sharer) add(r selection.Reservation) {
	s.mu.Lock()
	s.pending = append(s.pending, r)
	s.mu.Unlock()
}

// run sends the pending batch every shareInterval until ctx is done.
func (s *sharer) run(ctx context.Context) {
	t := time.NewTicker(shareInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return
		case <-t.C:
			s.flush()
		}
	}
}

func (s *sharer) flush() {
	s.mu.Lock()
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	data, err := json.Marshal(batch)
	if err == nil {
		err = s.nc.Publish(bus.ReservationSubject, data)
	}
	if err != nil {
		s.log.Debug().Err(err).Int("reservations", len(batch)).Msg("share reservations")
	}
}

// onReservations applies a batch shared by any replica (its own included:
// the ledger ignores ids it already holds).
func (s *Service) onReservations(m *nats.Msg) {
	var batch []selection.Reservation
	if err := json.Unmarshal(m.Data, &batch); err != nil {
		s.log.Warn().Err(err).Str("subject", m.Subject).Msg("ignoring malformed reservations")
		return
	}
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	for _, r := range batch {
		if r.ID != "" && r.GPUKey != "" {
			s.ledger.Reserve(r)
		}
	}
}

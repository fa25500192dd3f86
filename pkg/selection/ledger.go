package selection

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Reservation is memory a placement claims on a GPU until a newer sample of
// that GPU shows it, or until it expires. Without reservations every request
// between two samples (5 s apart by default) would land on the same GPU.
type Reservation struct {
	// ID makes Reserve idempotent: selector replicas share reservations over
	// NATS and each also sees its own come back.
	ID       string    `json:"id"`
	GPUKey   string    `json:"gpu_key"`
	MemoryMB int64     `json:"memory_mb"`
	At       time.Time `json:"at"`
	Expires  time.Time `json:"expires"`
}

// Ledger holds the reservations of every GPU. It is safe for concurrent use;
// the read on the selection path is lock-free.
type Ledger struct {
	mu    sync.Mutex
	slots map[string]int
	// states is copied on growth, so readers index a stable slice.
	states atomic.Pointer[[]*slotState]
}

type slotState struct {
	reservedMB atomic.Int64
	// earliestExpiry is the first expiry among entries (unix ns), 0 for none;
	// readers prune only once it has passed.
	earliestExpiry atomic.Int64
	mu             sync.Mutex
	entries        []Reservation
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	l := &Ledger{slots: make(map[string]int)}
	empty := []*slotState{}
	l.states.Store(&empty)
	return l
}

// slot returns the stable slot number of a GPU key, creating it.
func (l *Ledger) slot(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i, ok := l.slots[key]; ok {
		return i
	}
	old := *l.states.Load()
	grown := make([]*slotState, len(old)+1)
	copy(grown, old)
	grown[len(old)] = &slotState{}
	l.slots[key] = len(old)
	l.states.Store(&grown)
	return len(old)
}

func (l *Ledger) state(slot int) *slotState { return (*l.states.Load())[slot] }

// Reserve records r unless a reservation with the same ID is already held.
// It reports whether r was added.
func (l *Ledger) Reserve(r Reservation) bool {
	s := l.state(l.slot(r.GPUKey))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if e.ID == r.ID {
			return false
		}
	}
	s.entries = append(s.entries, r)
	s.recount()
	return true
}

// Observe drops the reservations of a GPU made before a sample taken at
// sampledAt: that sample already shows their memory in use.
func (l *Ledger) Observe(gpuKey string, sampledAt time.Time) {
	s := l.state(l.slot(gpuKey))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = slices.DeleteFunc(s.entries, func(r Reservation) bool { return r.At.Before(sampledAt) })
	s.recount()
}

// ReservedMB is the memory currently reserved on a GPU.
func (l *Ledger) ReservedMB(gpuKey string, now time.Time) int64 {
	l.mu.Lock()
	i, ok := l.slots[gpuKey]
	l.mu.Unlock()
	if !ok {
		return 0
	}
	return l.reservedAt(i, now.UnixNano())
}

// reservedAt is the selection-path read.
func (l *Ledger) reservedAt(slot int, nowNanos int64) int64 {
	s := l.state(slot)
	if e := s.earliestExpiry.Load(); e != 0 && nowNanos >= e {
		s.mu.Lock()
		s.entries = slices.DeleteFunc(s.entries, func(r Reservation) bool { return r.Expires.UnixNano() <= nowNanos })
		s.recount()
		s.mu.Unlock()
	}
	return s.reservedMB.Load()
}

// recount refreshes the totals; the caller holds s.mu.
func (s *slotState) recount() {
	var total, earliest int64
	for _, r := range s.entries {
		total += r.MemoryMB
		if e := r.Expires.UnixNano(); earliest == 0 || e < earliest {
			earliest = e
		}
	}
	s.reservedMB.Store(total)
	s.earliestExpiry.Store(earliest)
}

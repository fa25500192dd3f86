package metricssink

import (
	"sync"
	"time"
)

// Stats is what the sink reports about its ingest: Service.Stats, the stats
// endpoint, the logs, and the orch_sink_* Prometheus metrics read it.
type Stats struct {
	// Inserted counts rows written; Duplicates counts events that were
	// already stored (redeliveries, republished events) and were skipped.
	Inserted   uint64 `json:"inserted"`
	Duplicates uint64 `json:"duplicates"`
	// Poison counts events skipped because they are no storable
	// selection-event (undecodable, missing fields, refused by the
	// database), once their message is acknowledged or terminated (a
	// message with no storable event is terminated).
	Poison uint64 `json:"poison"`
	// Batches counts committed transactions.
	Batches uint64 `json:"batches"`
	// StoreErrors counts batches the store failed to commit (naked, retried).
	StoreErrors uint64 `json:"store_errors"`
	// FetchErrors counts failed pulls from the consumer.
	FetchErrors uint64 `json:"fetch_errors"`
	// IngestRate is rows inserted per second over the last RateWindow.
	IngestRate float64 `json:"ingest_rate"`
	// ConsumerLag is how many stream messages (one or more events each)
	// the consumer has not yet delivered (NumPending); AckPending how many
	// are delivered but not yet acknowledged. LagUpdated is when they were read; zero before the first read.
	ConsumerLag uint64    `json:"consumer_lag"`
	AckPending  uint64    `json:"ack_pending"`
	LagUpdated  time.Time `json:"lag_updated"`
	// LastCommit is when the last batch was committed; zero before the first.
	LastCommit time.Time `json:"last_commit"`
}

// rateBuckets is how many slices the rate window is cut into: the rate
// forgets old rows one slice at a time.
const rateBuckets = 10

// rateMeter counts rows in time slices covering the last window and gives
// their rate; times are passed in so it is deterministic to test.
type rateMeter struct {
	window time.Duration
	width  time.Duration
	since  time.Time
	slot   [rateBuckets]struct {
		idx int64
		n   uint64
	}
}

func newRateMeter(window time.Duration, since time.Time) rateMeter {
	width := window / rateBuckets
	if width <= 0 {
		width = 1
	}
	return rateMeter{window: width * rateBuckets, width: width, since: since}
}

func (m *rateMeter) add(now time.Time, n uint64) {
	idx := now.UnixNano() / int64(m.width)
	s := &m.slot[idx%rateBuckets]
	if s.idx != idx {
		s.idx, s.n = idx, 0
	}
	s.n += n
}

// rate is rows per second over the window ending at now, or over the time
// since the meter started when that is shorter (at least one slice).
func (m *rateMeter) rate(now time.Time) float64 {
	cur := now.UnixNano() / int64(m.width)
	var total uint64
	for _, s := range m.slot {
		if s.idx > cur-rateBuckets && s.idx <= cur {
			total += s.n
		}
	}
	span := min(m.window, now.Sub(m.since))
	span = max(span, m.width)
	return float64(total) / span.Seconds()
}

// statsBox guards the counters shared by the fetch loop, the lag watcher and readers.
type statsBox struct {
	mu    sync.Mutex
	s     Stats
	meter rateMeter
}

func (b *statsBox) update(f func(s *Stats, m *rateMeter)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.s, &b.meter)
}

func (b *statsBox) snapshot(now time.Time) Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	s.IngestRate = b.meter.rate(now)
	return s
}

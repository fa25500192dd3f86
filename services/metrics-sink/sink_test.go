package metricssink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

// testConfig keeps batches small (many of them per test) and the ack wait
// short, so an unacked batch of a killed sink comes back within the test.
func testConfig() Config {
	return Config{
		BatchSize:   16,
		BatchWait:   50 * time.Millisecond,
		AckWait:     time.Second,
		RetryMax:    200 * time.Millisecond,
		LagInterval: 20 * time.Millisecond,
	}
}

// publish sends evs to the selection stream as the selector does: subject
// per category, Nats-Msg-Id = event id.
func publish(t *testing.T, js jetstream.JetStream, evs []events.SelectionEvent) {
	t.Helper()
	ctx := testCtx(t)
	for i := range evs {
		data, err := json.Marshal(&evs[i])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, bus.SelectionEventSubject(evs[i].TaskCategory), data,
			jetstream.WithMsgID(evs[i].EventID)); err != nil {
			t.Errorf("publish %s: %v", evs[i].EventID, err)
			return
		}
	}
}

// publishPacked sends evs packed as the selector packs them under load:
// per events to a message, one per line, Nats-Msg-Id = the first event's
// id. (The selector packs one category per message; the sink does not look
// at subjects.)
func publishPacked(t *testing.T, js jetstream.JetStream, evs []events.SelectionEvent, per int) {
	t.Helper()
	ctx := testCtx(t)
	for lo := 0; lo < len(evs); lo += per {
		var message []byte
		for i := lo; i < min(lo+per, len(evs)); i++ {
			message = events.AppendToMessage(message, mustJSON(t, &evs[i]))
		}
		if _, err := js.Publish(ctx, bus.SelectionEventSubject(evs[lo].TaskCategory), message,
			jetstream.WithMsgID(evs[lo].EventID)); err != nil {
			t.Fatalf("publish the message of %s: %v", evs[lo].EventID, err)
		}
	}
}

// running is a service started in the background.
type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config, js jetstream.JetStream, st Store, opts ...Option) *running {
	t.Helper()
	svc, err := New(cfg, js, st, append([]Option{WithLogger(zerolog.Nop())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the service and returns Run's error; later calls return nil.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func count(t *testing.T, st Store) int64 {
	t.Helper()
	n, err := st.Count(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// settled waits until the consumer has nothing left to deliver or to ack.
func settled(t *testing.T, svc *Service) {
	t.Helper()
	waitFor(t, "the consumer to settle", func() bool {
		s := svc.Stats()
		return !s.LagUpdated.IsZero() && s.ConsumerLag == 0 && s.AckPending == 0
	})
}

func sqliteStore(t *testing.T) (Store, string) {
	url := "sqlite:" + filepath.Join(t.TempDir(), "sink.db")
	return openStore(t, url), url
}

func TestSinkStoresEvents(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	const n = 300
	evs := makeEvents(0, n)
	publish(t, js, evs[:n/2])
	cfg := testConfig()
	cfg.RateWindow = time.Hour // every row of the test stays in the window
	r := start(t, cfg, js, st)
	publish(t, js, evs[n/2:]) // some before the sink starts, some while it runs
	waitFor(t, "all rows", func() bool { return count(t, st) == n })
	settled(t, r.svc)

	rows, err := st.Recent(testCtx(t), 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Fatalf("%d rows, want %d", len(rows), n)
	}
	byID := map[string]Row{}
	for _, row := range rows {
		byID[row.EventID] = row
	}
	for i := range evs {
		row, ok := byID[evs[i].EventID]
		if !ok {
			t.Fatalf("event %s has no row", evs[i].EventID)
		}
		got, _ := json.Marshal(row.Event)
		want, _ := json.Marshal(&evs[i])
		if string(got) != string(want) || row.SelectedModel != evs[i].SelectedModel ||
			row.TaskCategory != evs[i].TaskCategory || row.FinalScore != evs[i].FinalScore {
			t.Fatalf("row of %s differs:\n got %s\nwant %s", evs[i].EventID, got, want)
		}
	}
	s := r.svc.Stats()
	if s.Inserted != n || s.Duplicates != 0 || s.Poison != 0 || s.StoreErrors != 0 {
		t.Fatalf("stats %+v, want %d inserted and no duplicates, poison or errors", s, n)
	}
	if s.Batches < n/uint64(testConfig().BatchSize) || s.LastCommit.IsZero() || s.IngestRate <= 0 {
		t.Fatalf("stats %+v: want >= %d batches, a last commit and a positive ingest rate", s, n/testConfig().BatchSize)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

// sizingStore records the most records one Insert was given.
type sizingStore struct {
	Store
	most atomic.Int64
}

func (s *sizingStore) Insert(ctx context.Context, recs []Record) (int, error) {
	for n := int64(len(recs)); ; {
		cur := s.most.Load()
		if n <= cur || s.most.CompareAndSwap(cur, n) {
			break
		}
	}
	return s.Store.Insert(ctx, recs)
}

// TestSinkStoresPackedMessages: events packed several to a message, as the
// selector packs them under load, each become a row; mixed with messages
// of one event; no transaction holds more than BatchSize events, however
// many a message holds.
func TestSinkStoresPackedMessages(t *testing.T) {
	tests := []struct {
		name string
		// per: events per message of each part of the stream, in order.
		per []int
	}{
		{name: "eight to a message", per: []int{8}},
		{name: "full messages, each more than a batch", per: []int{events.MaxPerMessage}},
		{name: "single events, then packed, then single", per: []int{1, 5, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			js := natstest.JetStream(t, nc)
			st, _ := sqliteStore(t)
			sized := &sizingStore{Store: st}
			const part = 2 * events.MaxPerMessage
			evs := makeEvents(0, part*len(tc.per))
			for i, per := range tc.per {
				publishPacked(t, js, evs[i*part:(i+1)*part], per)
			}
			r := start(t, testConfig(), js, sized)
			waitFor(t, "all rows", func() bool { return count(t, st) == int64(len(evs)) })
			settled(t, r.svc)
			if s := r.svc.Stats(); s.Inserted != uint64(len(evs)) || s.Duplicates != 0 || s.Poison != 0 {
				t.Fatalf("stats %+v, want %d inserted, no duplicates or poison", s, len(evs))
			}
			if most, batch := sized.most.Load(), int64(testConfig().BatchSize); most > batch {
				t.Fatalf("a transaction held %d rows, want at most SINK_BATCH_SIZE %d", most, batch)
			}
			rows, err := st.Recent(testCtx(t), 1)
			if err != nil || len(rows) != 1 {
				t.Fatalf("recent rows %v, %v", rows, err)
			}
		})
	}
}

// TestSinkKilledMidStream: a sink whose connection dies mid-stream (acks
// lost, batches in flight) and a new sink on the same database end with
// every event exactly once, on either store.
func TestSinkKilledMidStream(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { testKilledMidStream(t, b.url(t)) })
	}
}

func testKilledMidStream(t *testing.T, dbURL string) {
	srv, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	const n = 600
	evs := makeEvents(0, n)

	var pub sync.WaitGroup
	pub.Go(func() { publish(t, js, evs) })

	st1 := openStore(t, dbURL)
	nc1 := natstest.Connect(t, srv)
	r1 := start(t, testConfig(), natstest.JetStream(t, nc1), st1)
	waitFor(t, "the first sink to store some rows", func() bool { return count(t, st1) >= n/6 })
	nc1.Close() // the kill: no goodbye, whatever is in flight stays unacked
	err := r1.stop(t)
	if err != nil && !errors.Is(err, ErrConsumer) {
		t.Fatalf("killed sink's Run returned %v", err)
	}
	first := r1.svc.Stats()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}
	if first.Inserted == 0 || first.Inserted >= n {
		t.Fatalf("the first sink stored %d of %d: the kill was not mid-stream", first.Inserted, n)
	}

	st2 := openStore(t, dbURL)
	nc2 := natstest.Connect(t, srv)
	r2 := start(t, testConfig(), natstest.JetStream(t, nc2), st2)
	pub.Wait()
	waitFor(t, "every row", func() bool { return count(t, st2) >= n })
	settled(t, r2.svc)

	if c := count(t, st2); c != n {
		t.Fatalf("%d rows, want exactly %d", c, n)
	}
	rows, err := st2.Recent(testCtx(t), 2*n)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, row := range rows {
		if seen[row.EventID] {
			t.Fatalf("event %s stored twice", row.EventID)
		}
		seen[row.EventID] = true
	}
	for _, ev := range evs {
		if !seen[ev.EventID] {
			t.Fatalf("event %s lost", ev.EventID)
		}
	}
	second := r2.svc.Stats()
	t.Logf("killed sink: %+v", first)
	t.Logf("new sink:    %+v", second)
	if first.Inserted+second.Inserted != n {
		t.Fatalf("inserted %d + %d, want %d in all", first.Inserted, second.Inserted, n)
	}
}

// TestSinkCommittedButNotAcked: events already in the database (committed,
// ack lost) are delivered again, skipped and acked.
func TestSinkCommittedButNotAcked(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	const n = 100
	evs := makeEvents(0, n)
	if _, err := st.Insert(testCtx(t), records(t, evs[:n/2])); err != nil {
		t.Fatal(err)
	}
	publish(t, js, evs)
	r := start(t, testConfig(), js, st)
	waitFor(t, "every event handled", func() bool {
		s := r.svc.Stats()
		return s.Inserted+s.Duplicates == n
	})
	settled(t, r.svc)
	if s := r.svc.Stats(); s.Inserted != n/2 || s.Duplicates != n/2 {
		t.Fatalf("stats %+v, want %d inserted and %d duplicates", s, n/2, n/2)
	}
	if c := count(t, st); c != n {
		t.Fatalf("%d rows, want %d", c, n)
	}
}

func TestSinkPoisonMessages(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	ctx := testCtx(t)
	evs := makeEvents(0, 20)
	publish(t, js, evs[:10])
	for _, bad := range []string{
		"not json",
		`{"event_id":"no-category","timestamp":"2025-01-01T00:00:00Z"}`,
		// decodes, but Go cannot write this offset back into event_json
		`{"event_id":"bad-offset","timestamp":"2025-01-01T00:00:00+24:00","task_category":"code","selected_model":"m"}`,
		// year 10000 in UTC: the timestamp column could not be read back
		`{"event_id":"year-10000","timestamp":"9999-12-31T23:30:00-01:00","task_category":"code","selected_model":"m"}`,
	} {
		if _, err := js.Publish(ctx, bus.SelectionEventSubject("code"), []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, js, evs[10:])
	// Packed messages: one with two storable events around a broken one
	// (stored and acknowledged), one with nothing storable (terminated),
	// and an empty one.
	more := makeEvents(20, 2)
	for _, message := range [][]byte{
		events.AppendToMessage(events.AppendToMessage(mustJSON(t, &more[0]), []byte(`{"event_id":`)), mustJSON(t, &more[1])),
		[]byte("not json\n{\"event_id\":\"no-category\",\"timestamp\":\"2025-01-01T00:00:00Z\"}"),
		[]byte("\n"),
	} {
		if _, err := js.Publish(ctx, bus.SelectionEventSubject("code"), message); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, testConfig(), js, st)
	waitFor(t, "valid rows and poison counted", func() bool {
		return count(t, st) == 22 && r.svc.Stats().Poison == 8
	})
	settled(t, r.svc) // acknowledged or terminated, so nothing stays pending
	if s := r.svc.Stats(); s.Inserted != 22 || s.Poison != 8 || s.StoreErrors != 0 {
		t.Fatalf("stats %+v, want 22 inserted, 8 poison, no store errors", s)
	}
}

var errDown = errors.New("database is down")

// scriptedStore fails the Inserts numbered in fail (from 1), as a database
// that is briefly down, and refuses the events refuse, as PostgreSQL
// refuses a NUL byte.
type scriptedStore struct {
	Store
	fail   map[int32]bool
	refuse []string
	calls  atomic.Int32
}

func (s *scriptedStore) Insert(ctx context.Context, recs []Record) (int, error) {
	if s.fail[s.calls.Add(1)] {
		return 0, errDown
	}
	for i, rec := range recs {
		if slices.Contains(s.refuse, rec.Event.EventID) {
			return 0, &RowError{Index: i, EventID: rec.Event.EventID, Err: errors.New("invalid byte sequence")}
		}
	}
	return s.Store.Insert(ctx, recs)
}

// failFirst fails the first n Inserts (scriptedStore.fail).
func failFirst(n int32) map[int32]bool {
	fail := map[int32]bool{}
	for i := int32(1); i <= n; i++ {
		fail[i] = true
	}
	return fail
}

func TestSinkRetriesAfterStoreError(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	flaky := &scriptedStore{Store: st, fail: failFirst(3)}
	const n = 50
	publish(t, js, makeEvents(0, n))
	r := start(t, testConfig(), js, flaky)
	waitFor(t, "all rows despite the failures", func() bool { return count(t, st) == n })
	settled(t, r.svc)
	if s := r.svc.Stats(); s.StoreErrors != 3 || s.Inserted != n {
		t.Fatalf("stats %+v, want 3 store errors and %d inserted", s, n)
	}
}

// A packed message naked after a failed commit comes back: its poison
// event is counted once, its other events stored once.
func TestSinkCountsPoisonOncePerEvent(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	flaky := &scriptedStore{Store: st, fail: failFirst(2)}
	evs := makeEvents(0, 2)
	var message []byte
	for _, data := range [][]byte{mustJSON(t, &evs[0]), []byte(`{"event_id":`), mustJSON(t, &evs[1])} {
		message = events.AppendToMessage(message, data)
	}
	if _, err := js.Publish(testCtx(t), bus.SelectionEventSubject("code"), message); err != nil {
		t.Fatal(err)
	}
	r := start(t, testConfig(), js, flaky)
	waitFor(t, "both rows", func() bool { return count(t, st) == 2 })
	settled(t, r.svc)
	if s := r.svc.Stats(); s.Poison != 1 || s.StoreErrors != 2 || s.Inserted != 2 {
		t.Fatalf("stats %+v, want 1 poison, 2 store errors, 2 inserted", s)
	}
}

// TestSinkPackedMessageAcrossTransactions: one message of 40 events is
// written in three transactions of SINK_BATCH_SIZE 16 at most; it is
// acknowledged only after the last, so a failure in a later one brings it
// back whole, and an event refused in any of them is poison, counted once
// when the message is finally acknowledged.
func TestSinkPackedMessageAcrossTransactions(t *testing.T) {
	evs := makeEvents(0, 40)
	tests := []struct {
		name string
		fail map[int32]bool
		// refuse: the index of an event the store refuses; -1 none.
		refuse     int
		wantRows   int64
		wantErrors uint64
		wantPoison uint64
		// wantDuplicates: the events committed before a failure, skipped
		// when the message comes back whole.
		wantDuplicates uint64
	}{
		{name: "the second transaction fails once", fail: map[int32]bool{2: true}, refuse: -1, wantRows: 40, wantErrors: 1, wantDuplicates: 16},
		{name: "an event of the second transaction refused", refuse: 20, wantRows: 39, wantPoison: 1},
		{name: "the first fails, then an event of the second is refused", fail: map[int32]bool{1: true}, refuse: 20, wantRows: 39, wantErrors: 1, wantPoison: 1},
		{name: "an event refused, then the third transaction fails", fail: map[int32]bool{4: true}, refuse: 20, wantRows: 39, wantErrors: 1, wantPoison: 1, wantDuplicates: 31},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			js := natstest.JetStream(t, nc)
			st, _ := sqliteStore(t)
			store := &scriptedStore{Store: st, fail: tc.fail}
			if tc.refuse >= 0 {
				store.refuse = []string{evs[tc.refuse].EventID}
			}
			publishPacked(t, js, evs, len(evs))
			r := start(t, testConfig(), js, store)
			waitFor(t, "the rows", func() bool { return count(t, st) == tc.wantRows })
			settled(t, r.svc)
			s := r.svc.Stats()
			if s.Inserted != uint64(tc.wantRows) || s.StoreErrors != tc.wantErrors || s.Poison != tc.wantPoison || s.Duplicates != tc.wantDuplicates {
				t.Fatalf("stats %+v, want %d inserted, %d store errors, %d poison, %d duplicates",
					s, tc.wantRows, tc.wantErrors, tc.wantPoison, tc.wantDuplicates)
			}
		})
	}
}

func mustJSON(t *testing.T, ev *events.SelectionEvent) []byte {
	t.Helper()
	data, err := ev.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSinkRefusedEventIsSkipped: an event the database refuses is counted
// as poison; its message is terminated when it held nothing else, and
// acknowledged once its other events are stored when packed.
func TestSinkRefusedEventIsSkipped(t *testing.T) {
	for _, per := range []int{1, 5} {
		t.Run(fmt.Sprintf("%d events per message", per), func(t *testing.T) {
			_, nc := natstest.Start(t)
			js := natstest.JetStream(t, nc)
			st, _ := sqliteStore(t)
			evs := makeEvents(0, 30)
			publishPacked(t, js, evs, per)
			r := start(t, testConfig(), js, &scriptedStore{Store: st, refuse: []string{evs[7].EventID}})
			waitFor(t, "the other rows", func() bool { return count(t, st) == 29 })
			settled(t, r.svc)
			if s := r.svc.Stats(); s.Poison != 1 || s.Inserted != 29 || s.StoreErrors != 0 {
				t.Fatalf("stats %+v, want 1 poison, 29 inserted, no store errors", s)
			}
		})
	}
}

// blockingStore holds every insert until release is closed.
type blockingStore struct {
	Store
	release chan struct{}
}

func (b *blockingStore) Insert(ctx context.Context, recs []Record) (int, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return b.Store.Insert(ctx, recs)
}

// TestSinkReportsLag: while the database holds the first batch (and the
// sink has fetched the next ones), the lag is what the stream has beyond
// the events the sink holds; once it is released the lag drains to 0.
func TestSinkReportsLag(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	cfg := testConfig()
	cfg.AckWait = time.Minute // the held batch must not be redelivered meanwhile
	const n = 50
	publish(t, js, makeEvents(0, n))
	block := &blockingStore{Store: st, release: make(chan struct{})}
	r := start(t, cfg, js, block)
	waitFor(t, "lag of the held batches", func() bool {
		s := r.svc.Stats()
		return s.AckPending >= uint64(cfg.BatchSize) && s.ConsumerLag+s.AckPending == n && s.Inserted == 0
	})
	close(block.release)
	waitFor(t, "all rows", func() bool { return count(t, st) == n })
	settled(t, r.svc)
}

func TestNewChecksConfig(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	with := func(f func(*Config)) Config {
		c := testConfig()
		f(&c)
		return c
	}
	cases := []struct {
		name  string
		cfg   Config
		js    jetstream.JetStream
		store Store
		want  error
	}{
		{"valid", testConfig(), js, st, nil},
		{"zero config takes the defaults", Config{}, js, st, nil},
		{"no JetStream", testConfig(), nil, st, ErrConfig},
		{"no store", testConfig(), js, nil, ErrConfig},
		{"negative batch", with(func(c *Config) { c.BatchSize = -1 }), js, st, ErrConfig},
		{"huge batch", with(func(c *Config) { c.BatchSize = MaxBatchSize + 1 }), js, st, ErrConfig},
		{"negative wait", with(func(c *Config) { c.BatchWait = -time.Second }), js, st, ErrConfig},
		{"ack wait below batch wait", with(func(c *Config) { c.AckWait = c.BatchWait / 2 }), js, st, ErrConfig},
		{"negative request timeout", with(func(c *Config) { c.RequestTimeout = -time.Second }), js, st, ErrConfig},
		{"negative stats interval", with(func(c *Config) { c.StatsInterval = -time.Second }), js, st, ErrConfig},
		{"negative drain timeout", with(func(c *Config) { c.DrainTimeout = -time.Second }), js, st, ErrConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.cfg, c.js, c.store)
			if !errors.Is(err, c.want) {
				t.Fatalf("New error = %v, want %v", err, c.want)
			}
			if err == nil && (s.cfg.BatchSize <= 0 || s.cfg.BatchWait <= 0 || s.cfg.AckWait <= 0 ||
				s.cfg.RetryMax <= 0 || s.cfg.LagInterval <= 0 || s.cfg.RateWindow <= 0 || s.cfg.RequestTimeout <= 0) {
				t.Fatalf("config left with a zero setting: %+v", s.cfg)
			}
		})
	}
}

// TestSinkConsumerConfig: the durable consumer is explicit-ack with room for
// several batches in flight, and a second sink shares it.
func TestSinkConsumerConfig(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	cfg := testConfig()
	r1 := start(t, cfg, js, st)
	r2 := start(t, cfg, js, st)
	const n = 64
	publish(t, js, makeEvents(0, n))
	waitFor(t, "all rows", func() bool { return count(t, st) == n })
	settled(t, r1.svc)
	settled(t, r2.svc)
	cons, err := js.Consumer(testCtx(t), bus.SelectionStream, bus.SinkConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Durable != bus.SinkConsumer || c.AckPolicy != jetstream.AckExplicitPolicy ||
		c.AckWait != cfg.AckWait || c.MaxAckPending != MaxSharedSinks*batchesPerSink*cfg.BatchSize || c.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Fatalf("consumer config %+v", c)
	}
	if got := r1.svc.Stats().Inserted + r2.svc.Stats().Inserted; got != n {
		t.Fatalf("two sinks inserted %d, want %d", got, n)
	}
}

// Run must give up when its connection is closed instead of spinning.
func TestRunStopsOnClosedConnection(t *testing.T) {
	srv, _ := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	st, _ := sqliteStore(t)
	r := start(t, testConfig(), natstest.JetStream(t, nc), st)
	waitFor(t, "the consumer to start", func() bool { return !r.svc.Stats().LagUpdated.IsZero() })
	nc.Close()
	select {
	case err := <-r.done:
		close(r.done)
		if !errors.Is(err, ErrConsumer) || !(errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed)) {
			t.Fatalf("Run returned %v, want ErrConsumer wrapping connection closed", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run kept going on a closed connection")
	}
}

// countingStore blocks each Insert until released and tracks how many are
// waiting at once.
type countingStore struct {
	Store
	release chan struct{}
	mu      sync.Mutex
	waiting int
	most    int
}

func (c *countingStore) Insert(ctx context.Context, recs []Record) (int, error) {
	c.mu.Lock()
	c.waiting++
	c.most = max(c.most, c.waiting)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	select {
	case <-c.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return c.Store.Insert(ctx, recs)
}

func (c *countingStore) mostAtOnce() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.most
}

// TestSharedSinksWriteAtOnce: MaxSharedSinks sinks on one consumer each get
// a batch to write while every other sink holds its batches: none waits on
// the consumer's ack allowance.
func TestSharedSinksWriteAtOnce(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	cs := &countingStore{Store: st, release: make(chan struct{})}
	cfg := testConfig()
	cfg.BatchWait = 20 * time.Millisecond
	cfg.AckWait = 10 * time.Minute // nothing is redelivered while the writes wait
	n := MaxSharedSinks * batchesPerSink * cfg.BatchSize
	publish(t, js, makeEvents(0, n))
	for range MaxSharedSinks {
		start(t, cfg, js, cs)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(cs.release) }) }
	t.Cleanup(release) // before the sinks stop, should the wait fail
	waitFor(t, "every sink writing a batch at once", func() bool { return cs.mostAtOnce() == MaxSharedSinks })
	release()
	waitFor(t, "all rows", func() bool { return count(t, st) == int64(n) })
}

// TestConsumerAboveAckPendingLimit: a stream whose consumers may hold fewer
// unacknowledged events than the sink asks for stops Run with an error that
// says which setting to change.
func TestConsumerAboveAckPendingLimit(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	ctx := testCtx(t)
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		t.Fatal(err)
	}
	sc := stream.CachedInfo().Config
	sc.ConsumerLimits.MaxAckPending = 100
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	st, _ := sqliteStore(t)
	svc, err := New(testConfig(), js, st, WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Run(ctx)
	if !errors.Is(err, ErrConsumer) || !strings.Contains(err.Error(), "lower SINK_BATCH_SIZE") {
		t.Fatalf("Run error = %v, want an ErrConsumer naming SINK_BATCH_SIZE", err)
	}
}

// outcomeMsg is a delivered message that records how it was settled.
type outcomeMsg struct {
	jetstream.Msg // unused methods panic
	name          string
	outcome       string
}

func (m *outcomeMsg) Subject() string { return "orch.events.selection.code" }
func (m *outcomeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}
func (m *outcomeMsg) Ack() error                       { m.outcome += "ack"; return nil }
func (m *outcomeMsg) NakWithDelay(time.Duration) error { m.outcome += "nak"; return nil }
func (m *outcomeMsg) TermWithReason(string) error      { m.outcome += "term"; return nil }

// write acknowledges each message as soon as the transaction with its last
// event committed, so that a later failure naks only the messages not yet
// stored whole; a message whose every event is refused is terminated.
func TestWriteSettlesEachMessageOnce(t *testing.T) {
	// Three messages of three events each, in transactions of four.
	evs := makeEvents(0, 9)
	tests := []struct {
		name   string
		fail   map[int32]bool
		refuse []int
		want   map[string]string
	}{
		{name: "all stored", want: map[string]string{"a": "ack", "b": "ack", "c": "ack"}},
		{name: "the second transaction fails", fail: map[int32]bool{2: true}, want: map[string]string{"a": "ack", "b": "nak", "c": "nak"}},
		{name: "the third transaction fails", fail: map[int32]bool{3: true}, want: map[string]string{"a": "ack", "b": "ack", "c": "nak"}},
		{name: "every event of b refused", refuse: []int{3, 4, 5}, want: map[string]string{"a": "ack", "b": "term", "c": "ack"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			st, _ := sqliteStore(t)
			cfg := testConfig()
			cfg.BatchSize = 4
			store := &scriptedStore{Store: st, fail: tc.fail}
			for _, i := range tc.refuse {
				store.refuse = append(store.refuse, evs[i].EventID)
			}
			svc, err := New(cfg, natstest.JetStream(t, nc), store)
			if err != nil {
				t.Fatal(err)
			}
			msgs := []*outcomeMsg{{name: "a"}, {name: "b"}, {name: "c"}}
			var b fetched
			for i, m := range msgs {
				b.msgs = append(b.msgs, m)
				b.poisoned = append(b.poisoned, 0)
				b.recs = append(b.recs, records(t, evs[3*i:3*i+3])...)
				b.from = append(b.from, i, i, i)
			}
			err = svc.write(testCtx(t), b, time.Millisecond)
			if (tc.fail != nil) != (err != nil) {
				t.Fatalf("write: %v", err)
			}
			for _, m := range msgs {
				if m.outcome != tc.want[m.name] {
					t.Errorf("message %s: %q, want %q", m.name, m.outcome, tc.want[m.name])
				}
			}
		})
	}
}

// A NATS server that comes back without its data (a wiped volume) has
// neither the stream nor the consumer: a pull then has no responders. The
// sink makes both again and goes on storing. Losing the stream alone, with
// the server up, is the same to the sink.
func TestSinkRecoversFromLostData(t *testing.T) {
	tests := []struct {
		name string
		lose func(t *testing.T, s *server.Server, js jetstream.JetStream)
	}{
		{"the stream deleted", func(t *testing.T, _ *server.Server, js jetstream.JetStream) {
			if err := js.DeleteStream(testCtx(t), bus.SelectionStream); err != nil {
				t.Fatal(err)
			}
		}},
		{"the server restarted without its data", func(t *testing.T, first *server.Server, _ jetstream.JetStream) {
			port := first.Addr().(*net.TCPAddr).Port
			first.Shutdown()
			first.WaitForShutdown()
			second, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: port, DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				second.Shutdown()
				second.WaitForShutdown()
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, nc := natstest.Start(t)
			js := natstest.JetStream(t, nc)
			st, _ := sqliteStore(t)
			cfg := testConfig()
			cfg.Provision = true
			r := start(t, cfg, js, st)
			publish(t, js, makeEvents(0, 3))
			waitFor(t, "the first rows", func() bool { return count(t, st) == 3 })

			tc.lose(t, s, js)
			waitFor(t, "the sink to make the stream again", func() bool {
				_, err := js.Stream(testCtx(t), bus.SelectionStream)
				return err == nil
			})
			publish(t, js, makeEvents(3, 2))
			waitFor(t, "the rows after the loss", func() bool { return count(t, st) == 5 })
			waitFor(t, "the sink to be ready", func() bool { return r.svc.Check() == nil })
		})
	}
}

// A sink that cannot read its consumer (here: the stream is gone and the
// sink may not make it) reports itself not ready, saying why, once fetches
// have failed for fetchFailingFor; not after one failed pull.
func TestSinkNotReadyWhileFetchesFail(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	r := start(t, testConfig(), js, st) // Provision off
	waitFor(t, "the sink to be ready", func() bool { return r.svc.Check() == nil })
	if err := js.DeleteStream(testCtx(t), bus.SelectionStream); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sink to say it cannot read", func() bool {
		err := r.svc.Check()
		return errors.Is(err, ErrNotReady) && strings.Contains(err.Error(), "cannot read consumer "+bus.SinkConsumer)
	})
}

// A SQLite sink that finds a pull already waiting on the consumer (another
// sink's) warns that the decisions would be split between files.
func TestSecondSQLiteSinkWarns(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	other, err := New(testConfig(), js, st)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(testCtx(t), bus.SelectionStream, other.consumerConfig())
	if err != nil {
		t.Fatal(err)
	}
	// The other sink's pull, waiting all through the test.
	if _, err := cons.Fetch(1, jetstream.FetchMaxWait(waitLimitPull)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other pull to wait", func() bool {
		info, err := cons.Info(testCtx(t))
		return err == nil && info.NumWaiting > 0
	})
	second, _ := sqliteStore(t)
	var logs logtest.Buffer
	start(t, testConfig(), js, second, WithLogger(zerolog.New(&logs)))
	waitFor(t, "the warning", func() bool { return strings.Contains(logs.String(), "another sink reads the decisions") })
}

// waitLimitPull is how long the stand-in for another sink's pull waits.
const waitLimitPull = time.Minute

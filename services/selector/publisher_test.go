package selector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

const testEventStream = "TEST_EVENTS"

// eventStream is how a test makes testEventStream.
type eventStream struct {
	name       string
	allowBatch bool
	persist    jetstream.PersistModeType
}

var (
	batchedStream = eventStream{"fast-ingest batches", true, jetstream.DefaultPersistMode}
	// asyncStream is the decision stream of serve's embedded server
	// (bus.WithAsyncEventPersist).
	asyncStream     = eventStream{"fast-ingest batches, async persist", true, jetstream.AsyncPersistMode}
	unbatchedStream = eventStream{"one acknowledged publish per event (stream without batches)", false, jetstream.DefaultPersistMode}
)

// startEventPublisher creates testEventStream as es says and runs a
// publisher into it until the test stops it with the returned function,
// which waits for the last acknowledgement.
func startEventPublisher(t testing.TB, nc *nats.Conn, es eventStream, retries int, setup ...func(*EventPublisher)) (*EventPublisher, func()) {
	t.Helper()
	ctx := context.Background()
	admin := natstest.JetStream(t, nc)
	if _, err := admin.CreateStream(ctx, jetstream.StreamConfig{
		Name: testEventStream, Subjects: []string{"test.events.>"}, Storage: jetstream.FileStorage,
		Duplicates: bus.SelectionDedupWindow, AllowBatchPublish: es.allowBatch, PersistMode: es.persist,
	}); err != nil {
		t.Fatal(err)
	}
	p, err := NewEventPublisher(nc, testEventStream, zerolog.Nop(), 4096, retries)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(p)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		p.Run(context.Background(), stop)
		p.Wait()
	}()
	// Run decides its mode first: in batch mode, publish only once it has.
	eventually(t, "the publisher to start", func() bool { return p.Stats().Batched == es.allowBatch })
	stopped := false
	shutdown := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	t.Cleanup(shutdown)
	return p, shutdown
}

func testEvent(id string) *nats.Msg {
	return testEventOn("test.events.code", id)
}

func testEventOn(subject, id string) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: []byte(`{"event_id":"` + id + `"}`), Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return msg
}

// stored is what an event stream holds.
type stored struct {
	// events counts the events of every message; ids lists them and data
	// holds their JSON, in stream order; messages counts the messages.
	events, messages uint64
	ids              []string
	data             [][]byte
}

// storedEvents reads every message of testEventStream.
func storedEvents(t testing.TB, nc *nats.Conn) stored {
	t.Helper()
	return readEvents(t, natstest.JetStream(t, nc), testEventStream)
}

// readEvents reads every message of stream. An event stored twice fails
// the test; so does a message whose Nats-Msg-Id is not its first event's
// id.
func readEvents(t testing.TB, js jetstream.JetStream, stream string) stored {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got stored
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got.messages++
		first := true
		for data := range events.Each(msg.Data) {
			var ev struct {
				EventID string `json:"event_id"`
			}
			if err := json.Unmarshal(data, &ev); err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
			if first && msg.Header.Get(jetstream.MsgIDHeader) != ev.EventID {
				t.Fatalf("message %d has Nats-Msg-Id %q, its first event %q", seq, msg.Header.Get(jetstream.MsgIDHeader), ev.EventID)
			}
			first = false
			if seen[ev.EventID] {
				t.Fatalf("event %s stored twice", ev.EventID)
			}
			seen[ev.EventID] = true
			got.events++
			got.ids = append(got.ids, ev.EventID)
			got.data = append(got.data, data)
		}
	}
	return got
}

// Every event lands once in either mode: more than a batch's flow window
// of them, and some sent twice in messages of the same Nats-Msg-Id (as a
// retry of a message that had landed), which the stream drops.
func TestEventPublisherStoresEveryEventOnce(t *testing.T) {
	for _, es := range []eventStream{batchedStream, asyncStream, unbatchedStream} {
		t.Run(es.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			p, stop := startEventPublisher(t, nc, es, 5)
			const n, again = 3 * batchFlow, 50
			// The first ones one at a time, each its own message.
			for i := range again {
				p.Publish(testEvent("ev-" + strconv.Itoa(i)))
				eventually(t, "a single event sent", func() bool { return p.Stats().Sent == uint64(i+1) })
			}
			for i := again; i < n; i++ {
				if !p.Publish(testEvent("ev-" + strconv.Itoa(i))) {
					t.Fatalf("event %d dropped", i)
				}
			}
			eventually(t, "every event sent", func() bool { return p.Stats().Sent == n })
			// However these are packed, each message's id was a message's
			// id before.
			for i := range again {
				p.Publish(testEvent("ev-" + strconv.Itoa(i)))
			}
			stop()
			st := p.Stats()
			if st.Sent != n+again || st.Published != n+again || st.Failed != 0 || st.Dropped != 0 || st.Retried != 0 || st.Buffered != 0 || st.Batched != es.allowBatch {
				t.Fatalf("stats %+v, want %d sent and published, batched %v", st, n+again, es.allowBatch)
			}
			if got := storedEvents(t, nc); got.events != n {
				t.Fatalf("stream holds %d events, want %d", got.events, n)
			}
		})
	}
}

// The events queued when the publisher takes one are packed: one message
// per subject, in order, at most the pack limit's events (WithPackLimit)
// and packMaxBytes each.
func TestEventPublisherPacksQueuedEvents(t *testing.T) {
	tests := []struct {
		name     string
		subjects []string
		n        int
		// size pads each event's data to this many bytes (0: as testEvent).
		size int
		// pack is the WithPackLimit (0: the default).
		pack         int
		wantMessages uint64
	}{
		{name: "one subject", subjects: []string{"test.events.code"}, n: 600, wantMessages: 3},
		{name: "two subjects", subjects: []string{"test.events.code", "test.events.math"}, n: 100, wantMessages: 2},
		{name: "by size", subjects: []string{"test.events.code"}, n: 20, size: 10 << 10, wantMessages: 7},
		{name: "pack limit 10", subjects: []string{"test.events.code"}, n: 95, pack: 10, wantMessages: 10},
		{name: "pack limit 1: one event per message", subjects: []string{"test.events.code"}, n: 50, pack: 1, wantMessages: 50},
	}
	for _, tc := range tests {
		for _, es := range []eventStream{batchedStream, unbatchedStream} {
			t.Run(tc.name+", "+es.name, func(t *testing.T) {
				_, nc := natstest.Start(t)
				var want []string
				// Queued before Run, so that its first rounds find them all.
				p, stop := startEventPublisher(t, nc, es, 5, func(p *EventPublisher) {
					if tc.pack > 0 {
						WithPackLimit(tc.pack)(p)
					}
					for i := range tc.n {
						id := fmt.Sprintf("ev-%03d", i)
						msg := testEventOn(tc.subjects[i%len(tc.subjects)], id)
						if tc.size > 0 {
							msg.Data = []byte(fmt.Sprintf(`{"event_id":%q,"pad":"%s"}`, id, strings.Repeat("x", tc.size-len(id)-22)))
						}
						p.Publish(msg)
						want = append(want, id)
					}
				})
				stop()
				if st := p.Stats(); st.Sent != uint64(tc.n) || st.Published != uint64(tc.n) || st.Failed != 0 {
					t.Fatalf("stats %+v, want %d sent and published", st, tc.n)
				}
				got := storedEvents(t, nc)
				// Without batches, EventPublishers goroutines share the
				// queue, and how they split it is up to the scheduler.
				if got.events != uint64(tc.n) || (es.allowBatch && got.messages != tc.wantMessages) {
					t.Fatalf("stream holds %d events in %d messages, want %d in %d", got.events, got.messages, tc.n, tc.wantMessages)
				}
				slices.Sort(got.ids)
				if !slices.Equal(got.ids, want) {
					t.Fatalf("stored %v, want %v", got.ids, want)
				}
			})
		}
	}
}

// Packing never writes into a queued event's data, which its caller may
// share (the bench publishes one recorded event many times).
func TestEventPublisherLeavesEventDataAlone(t *testing.T) {
	shared := make([]byte, 0, 1024)
	shared = append(shared, `{"event_id":"shared"}`...)
	k := packer{}
	var sent []eventMsg
	for i := range 3 {
		msg := &nats.Msg{Subject: "test.events.code", Data: shared, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, strconv.Itoa(i))
		k.add(msg, packMaxBytes, func(em eventMsg) { sent = append(sent, em) })
	}
	k.flush(func(em eventMsg) { sent = append(sent, em) })
	if len(sent) != 1 || sent[0].events != 3 {
		t.Fatalf("sent %d messages (%+v), want one of 3 events", len(sent), sent)
	}
	if string(shared[:cap(shared)][len(shared):len(shared)+1]) != "\x00" || string(shared) != `{"event_id":"shared"}` {
		t.Fatalf("the shared data was written into: %q", shared[:len(shared)+32])
	}
	if want := strings.Repeat(`{"event_id":"shared"}`+"\n", 3); string(sent[0].msg.Data)+"\n" != want {
		t.Fatalf("packed %q, want %q", sent[0].msg.Data, want)
	}
}

// Selector replicas each keep a batch open on the one stream: their events
// interleave there, each replica's are all stored, and none is retried.
func TestEventPublishersOfReplicasShareTheStream(t *testing.T) {
	srv, nc := natstest.Start(t)
	const replicas, n = 3, 2 * batchFlow
	pubs := make([]*EventPublisher, replicas)
	stops := make([]func(), replicas)
	for r := range replicas {
		pubs[r], stops[r] = startEventPublisher(t, natstest.Connect(t, srv), batchedStream, 5)
	}
	var wg sync.WaitGroup
	for r, p := range pubs {
		wg.Go(func() {
			for i := range n {
				if !p.Publish(testEvent(fmt.Sprintf("r%d-ev-%d", r, i))) {
					t.Errorf("replica %d: event %d dropped", r, i)
					return
				}
			}
		})
	}
	wg.Wait()
	for r, stop := range stops {
		stop()
		if st := pubs[r].Stats(); st.Published != n || st.Failed != 0 || st.Retried != 0 || !st.Batched {
			t.Errorf("replica %d: stats %+v, want %d published in batches, none retried", r, st, n)
		}
	}
	if got := storedEvents(t, nc); got.events != replicas*n {
		t.Fatalf("stream holds %d events, want %d", got.events, replicas*n)
	}
}

// A server restart loses the open batch: the events it had not
// acknowledged are sent again, and each is stored once, whether the stream
// writes each event before acknowledging it or after (async persist, whose
// pending writes a shutdown completes).
func TestEventPublisherResendsABrokenBatch(t *testing.T) {
	for _, es := range []eventStream{batchedStream, asyncStream} {
		t.Run(es.name, func(t *testing.T) {
			dir := t.TempDir()
			start := func(port int) *server.Server {
				s, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: port, DataDir: dir})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			srv := start(-1)
			u, err := url.Parse(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			port, _ := strconv.Atoi(u.Port())
			t.Cleanup(func() {
				srv.Shutdown()
				srv.WaitForShutdown()
			})
			nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			p, stop := startEventPublisher(t, nc, es, 5)

			const n = 400
			for i := range n / 2 {
				p.Publish(testEvent(fmt.Sprintf("before-%d", i)))
			}
			eventually(t, "the first events stored", func() bool { return storedEvents(t, nc).events == n/2 })
			srv.Shutdown()
			srv.WaitForShutdown()
			srv = start(port)
			for i := range n / 2 {
				p.Publish(testEvent(fmt.Sprintf("after-%d", i)))
			}
			stop()
			st := p.Stats()
			if st.Published != n || st.Failed != 0 || st.Dropped != 0 {
				t.Fatalf("stats %+v, want %d published, none failed", st, n)
			}
			// Whether a batch was open at the restart (and its events retried)
			// depends on timing: the idle commit may have closed it just before.
			t.Logf("%d messages retried", st.Retried)
			if got := storedEvents(t, nc); got.events != n {
				t.Fatalf("stream holds %d events, want %d", got.events, n)
			}
		})
	}
}

// Events that no stream takes are retried, then counted as failed, every
// event of a packed message, and the publisher still stops.
func TestEventPublisherCountsEventsItGivesUp(t *testing.T) {
	for _, es := range []eventStream{batchedStream, unbatchedStream} {
		t.Run(es.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			p, stop := startEventPublisher(t, nc, es, 1)
			if err := natstest.JetStream(t, nc).DeleteStream(context.Background(), testEventStream); err != nil {
				t.Fatal(err)
			}
			// Queued at once, so that some are packed (how many is up to
			// the scheduler: Failed counts events either way).
			const n = 100
			for i := range n {
				p.Publish(testEvent("lost-" + strconv.Itoa(i)))
			}
			stop()
			if st := p.Stats(); st.Sent != n || st.Failed != n || st.Published != 0 || st.Retried == 0 {
				t.Fatalf("stats %+v, want %d sent and failed after a retry", st, n)
			}
		})
	}
}

// A steady trickle of events never leaves the batch idle: it is still
// committed once its oldest unacknowledged event has waited batchMaxWait,
// so the events are confirmed as they go.
func TestEventPublisherConfirmsATrickle(t *testing.T) {
	_, nc := natstest.Start(t)
	p, stop := startEventPublisher(t, nc, batchedStream, 5)
	const every = 20 * time.Millisecond
	trickle := 3 * batchMaxWait
	i := 0
	for start := time.Now(); time.Since(start) < trickle; i++ {
		p.Publish(testEvent("trickle-" + strconv.Itoa(i)))
		time.Sleep(every)
	}
	// Every batch but the last is confirmed while events still come.
	if st := p.Stats(); st.Published == 0 {
		t.Fatalf("stats %+v: nothing confirmed during a %s trickle of %d events", st, trickle, i)
	}
	stop()
	if st := p.Stats(); st.Published != uint64(i) {
		t.Fatalf("stats %+v, want %d published", st, i)
	}
}

// cutBatch is a fast-ingest batch whose stream ended it after `takes`
// messages (as at a gap when a leader is lost): it takes every message
// without acknowledging any, and its final acknowledgement counts takes.
type cutBatch struct {
	takes uint64
	added uint64
}

func (b *cutBatch) Add(string, []byte, ...jetstreamext.BatchMsgOpt) (*jetstreamext.FastPubAck, error) {
	return nil, errors.New("cutBatch: use AddMsg")
}

func (b *cutBatch) AddMsg(*nats.Msg, ...jetstreamext.BatchMsgOpt) (*jetstreamext.FastPubAck, error) {
	b.added++
	return &jetstreamext.FastPubAck{BatchSequence: b.added}, nil
}

func (b *cutBatch) Commit(context.Context, string, []byte, ...jetstreamext.BatchMsgOpt) (*jetstreamext.BatchAck, error) {
	return nil, errors.New("cutBatch: use Close")
}

func (b *cutBatch) CommitMsg(context.Context, *nats.Msg, ...jetstreamext.BatchMsgOpt) (*jetstreamext.BatchAck, error) {
	return nil, errors.New("cutBatch: use Close")
}

func (b *cutBatch) Close(context.Context) (*jetstreamext.BatchAck, error) {
	return &jetstreamext.BatchAck{Stream: testEventStream, BatchSize: min(b.takes, b.added)}, nil
}

func (b *cutBatch) IsClosed() bool { return false }

// A batch whose final acknowledgement counts fewer messages than were sent
// in it: the messages past the count are sent again, and their events not
// counted as published before that.
func TestEventPublisherResendsWhatACutBatchLost(t *testing.T) {
	_, nc := natstest.Start(t)
	// Ten messages: two events on each of five subjects, queued before Run.
	const subjects, perSubject, taken = 5, 2, 4
	p, stop := startEventPublisher(t, nc, batchedStream, 5, func(p *EventPublisher) {
		p.openBatch = func() (jetstreamext.FastPublisher, error) { return &cutBatch{takes: taken}, nil }
		for i := range subjects * perSubject {
			p.Publish(testEventOn(fmt.Sprintf("test.events.s%d", i%subjects), "cut-"+strconv.Itoa(i)))
		}
	})
	stop()
	const total = subjects * perSubject
	st := p.Stats()
	if st.Published != total || st.Failed != 0 || st.Retried != subjects-taken {
		t.Fatalf("stats %+v, want %d published, %d messages retried", st, total, subjects-taken)
	}
	// The fake took the first ones without storing them; the retries did.
	if got := storedEvents(t, nc); got.events != (subjects-taken)*perSubject || got.messages != subjects-taken {
		t.Fatalf("stream holds %d events in %d messages, want the %d retried", got.events, got.messages, subjects-taken)
	}
}

package selector

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
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
	msg := &nats.Msg{Subject: "test.events.code", Data: []byte(`{"event_id":"` + id + `"}`), Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return msg
}

func storedEvents(t testing.TB, nc *nats.Conn) uint64 {
	t.Helper()
	st, err := natstest.JetStream(t, nc).Stream(context.Background(), testEventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Every event lands once in either mode: more than a batch's flow window
// of them, and some sent twice (a retry of an event that had landed), which
// the stream drops by Nats-Msg-Id.
func TestEventPublisherStoresEveryEventOnce(t *testing.T) {
	for _, es := range []eventStream{batchedStream, asyncStream, unbatchedStream} {
		t.Run(es.name, func(t *testing.T) {
			_, nc := natstest.Start(t)
			p, stop := startEventPublisher(t, nc, es, 5)
			const n, again = 3 * batchFlow, 50
			for i := range n {
				if !p.Publish(testEvent("ev-" + strconv.Itoa(i))) {
					t.Fatalf("event %d dropped", i)
				}
			}
			for i := range again {
				p.Publish(testEvent("ev-" + strconv.Itoa(i)))
			}
			stop()
			st := p.Stats()
			if st.Published != n+again || st.Failed != 0 || st.Dropped != 0 || st.Retried != 0 || st.Buffered != 0 || st.Batched != es.allowBatch {
				t.Fatalf("stats %+v, want %d published, batched %v", st, n+again, es.allowBatch)
			}
			if got := storedEvents(t, nc); got != n {
				t.Fatalf("stream holds %d events, want %d", got, n)
			}
		})
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
	if got := storedEvents(t, nc); got != replicas*n {
		t.Fatalf("stream holds %d events, want %d", got, replicas*n)
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
			eventually(t, "the first events stored", func() bool { return storedEvents(t, nc) == n/2 })
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
			t.Logf("%d events retried", st.Retried)
			if got := storedEvents(t, nc); got != n {
				t.Fatalf("stream holds %d events, want %d", got, n)
			}
		})
	}
}

// Events that no stream takes are retried, then counted as failed, and
// the publisher still stops.
func TestEventPublisherCountsEventsItGivesUp(t *testing.T) {
	_, nc := natstest.Start(t)
	p, stop := startEventPublisher(t, nc, batchedStream, 1)
	if err := natstest.JetStream(t, nc).DeleteStream(context.Background(), testEventStream); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		p.Publish(testEvent("lost-" + strconv.Itoa(i)))
	}
	stop()
	if st := p.Stats(); st.Failed != n || st.Published != 0 || st.Retried == 0 {
		t.Fatalf("stats %+v, want %d failed after a retry", st, n)
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

// A batch whose final acknowledgement counts fewer events than were sent in
// it: the events past the count are sent again, not counted as published.
func TestEventPublisherResendsWhatACutBatchLost(t *testing.T) {
	_, nc := natstest.Start(t)
	const sent, taken = 10, 4
	p, stop := startEventPublisher(t, nc, batchedStream, 5, func(p *EventPublisher) {
		p.openBatch = func() (jetstreamext.FastPublisher, error) { return &cutBatch{takes: taken}, nil }
	})
	for i := range sent {
		p.Publish(testEvent("cut-" + strconv.Itoa(i)))
	}
	stop()
	st := p.Stats()
	if st.Published != sent || st.Failed != 0 || st.Retried != sent-taken {
		t.Fatalf("stats %+v, want %d published, %d of them retried", st, sent, sent-taken)
	}
	// The fake took the first ones without storing them; the retries did.
	if got := storedEvents(t, nc); got != sent-taken {
		t.Fatalf("stream holds %d events, want the %d retried", got, sent-taken)
	}
}

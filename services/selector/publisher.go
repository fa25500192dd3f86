package selector

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/nlocalmodels/orchestrator/pkg/events"
)

// EventPublisher sends decision events to their stream off the request
// path: a bounded buffer, retries with the same Nats-Msg-Id (so the stream
// deduplicates), and counters for what was published, retried, dropped or
// failed. Nothing is lost silently.
//
// The events waiting in the buffer when the publisher takes one are packed
// into as few messages as they fit, one per subject (events.Each reads
// them): the stream's work is per message, and one event per message
// capped the stream, not the selector, at ~110k events/s on 16 cores,
// dropping events once sinks read it too. At low load nothing waits, and
// each message holds one event.
//
// Where the stream allows it (NATS 2.14+, AllowBatchPublish, which
// bus.Provision sets), the messages go out as one fast-ingest batch, each
// with its own Nats-Msg-Id, but the stream acknowledges every few hundred
// messages instead of each one. Per-message acknowledgements were a third
// of the stream's work and most of the publisher's at 100k events/s.
// Otherwise each message is an asynchronous publish with its own
// acknowledgement.
type EventPublisher struct {
	js      jetstream.JetStream
	stream  string
	log     zerolog.Logger
	retries int
	queue   chan *nats.Msg
	acks    chan pendingEvent
	// packEvents and packBytes bound a packed message: its events, and
	// its data's size.
	packEvents, packBytes int

	batched atomic.Bool
	// sent counts events handed to the stream for the first time.
	sent      atomic.Uint64
	published atomic.Uint64
	// acknowledged counts single publishes the stream acknowledged: after
	// a broken batch, the next one tells that it takes events again.
	acknowledged atomic.Uint64
	retried      atomic.Uint64
	dropped      atomic.Uint64
	failed       atomic.Uint64
	done         sync.WaitGroup

	retrySlots chan struct{}
	retrying   sync.WaitGroup
	// openBatch starts a fast-ingest batch: openFastBatch, or a test's fake.
	openBatch func() (jetstreamext.FastPublisher, error)
}

// EventStats counts an EventPublisher's events.
type EventStats struct {
	// Sent events went to the stream, acknowledged or not yet.
	Sent uint64
	// Published events were acknowledged by the stream.
	Published uint64
	// Retried counts messages of events sent again after a failure.
	Retried uint64
	// Dropped events found the buffer full.
	Dropped uint64
	// Failed events were given up after every retry.
	Failed uint64
	// Buffered events wait to be published.
	Buffered int
	// Batched tells that Run publishes fast-ingest batches, not one
	// acknowledged publish per message.
	Batched bool
}

// eventMsg is one stream message and how many events it carries.
type eventMsg struct {
	msg    *nats.Msg
	events int
}

type pendingEvent struct {
	eventMsg
	future jetstream.PubAckFuture
}

// Asynchronous publishes awaiting their acknowledgement (without
// fast-ingest batches), at most: one event per message (WithPackLimit(1))
// needed 16,384 at 100k events/s on 16 cores; packed, each message may hold
// packMaxBytes, and 2,048 of them bound the memory at 64 MiB.
const (
	maxSingleEventsInFlight = 16384
	maxPackedInFlight       = 2048
)

// EventPublishers is how many goroutines hand events to the connection in
// the per-message mode: one alone fell behind at ~70k selections/s on 16
// cores.
const EventPublishers = 4

// packMaxBytes bounds a packed message's data (less where the server's
// max_payload is smaller): about eleven 2.8 KB events. The messages in
// flight, up to maxPackedInFlight or batchFlow x batchOutstanding, may all
// be full when the stream stalls.
const packMaxBytes = 32 << 10

// PublisherOption tunes an EventPublisher.
type PublisherOption func(*EventPublisher)

// WithPackLimit sets the most events packed into one message (default
// events.MaxPerMessage, at most that); 1 sends each event on its own.
func WithPackLimit(n int) PublisherOption {
	return func(p *EventPublisher) { p.packEvents = min(max(n, 1), events.MaxPerMessage) }
}

// eventAckTimeout bounds the wait for one publish's acknowledgement. An ack
// lost with the stream leader never arrives (the connection stays up, so
// nats.go does not fail the future): without a bound, awaitAcks would wait
// forever and every later event would count neither as published nor failed.
// Acks take milliseconds even with thousands in flight; a leader election
// that takes longer is ridden out by the retries.
const eventAckTimeout = 2 * time.Second

// Retry backoff: doubling from retryBackoffMin, at most retryBackoffMax.
const (
	retryBackoffMin = 50 * time.Millisecond
	retryBackoffMax = 2 * time.Second
)

// eventFailureSpan is the longest wait from an event's first send to its
// publisher learning that it failed: an acknowledgement's timeout for a
// single publish. In a batch the oldest unacknowledged event gets the
// batch committed once it has waited batchMaxWait (checked at each event
// and every batchIdleCommit), and the commit's acknowledgement may take
// the timeout; but the Add before that check may have stalled for the
// timeout too, waiting for flow acknowledgements, so two timeouts.
const eventFailureSpan = batchMaxWait + batchIdleCommit + 2*eventAckTimeout

// eventRetrySpan is the longest time from an event's first publish to its
// last retry, once its retries have started: the stream's dedup window must
// cover it, or a retry of an event that did land (its ack lost) is stored
// twice. When more than maxConcurrentRetries publishes fail together, the
// later ones wait for a slot first, and one may come after the window; the
// stream then holds it twice and the sink, keyed by event id, stores it
// once. It saturates at the longest Duration instead of overflowing.
func eventRetrySpan(retries int) time.Duration {
	span := eventFailureSpan
	backoff := retryBackoffMin
	for ; retries > 0 && backoff < retryBackoffMax; retries-- {
		span += backoff + eventAckTimeout
		backoff = min(2*backoff, retryBackoffMax)
	}
	step := retryBackoffMax + eventAckTimeout
	if retries > 0 && time.Duration(retries) > (math.MaxInt64-span)/step {
		return math.MaxInt64
	}
	return span + time.Duration(retries)*step
}

// NewEventPublisher returns a publisher of events into stream over nc,
// buffering at most buffer of them and retrying a failed publish retries
// times.
func NewEventPublisher(nc *nats.Conn, stream string, log zerolog.Logger, buffer, retries int, opts ...PublisherOption) (*EventPublisher, error) {
	p := &EventPublisher{
		stream: stream, log: log, retries: retries,
		packEvents: events.MaxPerMessage, packBytes: packMaxBytes,
		queue:      make(chan *nats.Msg, buffer),
		retrySlots: make(chan struct{}, maxConcurrentRetries),
	}
	for _, o := range opts {
		o(p)
	}
	// Leave the headers room under the server's limit; below that, or
	// before the server said (0), each event goes alone.
	p.packBytes = max(0, min(p.packBytes, int(nc.MaxPayload())-4<<10))
	inFlight := maxPackedInFlight
	if p.packEvents == 1 || p.packBytes == 0 {
		inFlight = maxSingleEventsInFlight
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(eventAckTimeout), jetstream.WithPublishAsyncMaxPending(inFlight))
	if err != nil {
		return nil, err
	}
	p.js, p.acks = js, make(chan pendingEvent, inFlight)
	p.openBatch = p.openFastBatch
	return p, nil
}

// Publish queues msg, one event's JSON, which carries the event's id as its
// Nats-Msg-Id. The publisher owns msg from here (a retry may resend it, or
// it may become the message other events are packed into) but never writes
// into msg.Data. It never blocks: a full buffer drops the event, counts it
// and returns false.
func (p *EventPublisher) Publish(msg *nats.Msg) bool {
	select {
	case p.queue <- msg:
		return true
	default:
		if p.dropped.Add(1)%1000 == 1 {
			p.log.Warn().Uint64("dropped_total", p.dropped.Load()).Msg("decision event buffer full: dropping events")
		}
		return false
	}
}

// Stats returns the counters.
func (p *EventPublisher) Stats() EventStats {
	return EventStats{
		Sent: p.sent.Load(), Published: p.published.Load(), Retried: p.retried.Load(),
		Dropped: p.dropped.Load(), Failed: p.failed.Load(), Buffered: len(p.queue),
		Batched: p.batched.Load(),
	}
}

// Run publishes until stop is closed and the buffer is empty, or until
// the flush deadline of ctx; Wait then waits for the last acknowledgements.
func (p *EventPublisher) Run(ctx context.Context, stop <-chan struct{}) {
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		p.awaitAcks(ctx)
	}()
	if p.batchAllowed(ctx) {
		p.batched.Store(true)
		p.publishBatches(ctx, stop)
	} else {
		var publishers sync.WaitGroup
		for range EventPublishers {
			publishers.Go(func() { p.publishAll(ctx, stop) })
		}
		publishers.Wait()
	}
	close(p.acks)
}

// batchAllowed tells whether the stream takes fast-ingest batches. A
// stream made by an older NATS, or one provisioned without the switch,
// gets one acknowledged publish per message.
func (p *EventPublisher) batchAllowed(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, eventAckTimeout)
	defer cancel()
	st, err := p.js.Stream(lctx, p.stream)
	if err != nil {
		p.log.Warn().Err(err).Str("stream", p.stream).Msg("look up the decision stream: publishing each message with its own acknowledgement")
		return false
	}
	if !st.CachedInfo().Config.AllowBatchPublish {
		p.log.Info().Str("stream", p.stream).Msg("the decision stream does not allow batched publishing (NATS before 2.14, or not provisioned by this version): publishing each message with its own acknowledgement; `orchestrator provision` enables batches")
		return false
	}
	return true
}

// publishAll is one publishing goroutine of run.
func (p *EventPublisher) publishAll(ctx context.Context, stop <-chan struct{}) {
	var k packer
	send := func(em eventMsg) { p.publish(ctx, em) }
	for {
		select {
		case msg := <-p.queue:
			p.packQueued(&k, msg, send)
		case <-stop:
			p.drainQueue(&k, send)
			return
		}
	}
}

// packQueued packs first and the events queued behind it, packEvents at
// most, hands the messages to send and counts the events sent.
func (p *EventPublisher) packQueued(k *packer, first *nats.Msg, send func(eventMsg)) {
	taken := 1
	k.add(first, p.packBytes, send)
fill:
	for taken < p.packEvents {
		select {
		case msg := <-p.queue:
			k.add(msg, p.packBytes, send)
			taken++
		default:
			break fill
		}
	}
	k.flush(send)
	p.sent.Add(uint64(taken))
}

// drainQueue packs and hands to send each event still buffered, without
// waiting for more: what Run does once stop is closed.
func (p *EventPublisher) drainQueue(k *packer, send func(eventMsg)) {
	for {
		select {
		case msg := <-p.queue:
			p.packQueued(k, msg, send)
		default:
			return
		}
	}
}

// packer gathers events into one open message per subject.
type packer struct {
	open []eventMsg
}

// add packs msg into the open message of its subject, or opens one; a
// message that msg would take past maxBytes goes to send first.
func (k *packer) add(msg *nats.Msg, maxBytes int, send func(eventMsg)) {
	for i := range k.open {
		em := &k.open[i]
		if em.msg.Subject != msg.Subject {
			continue
		}
		if len(em.msg.Data)+1+len(msg.Data) > maxBytes {
			send(*em)
			*em = eventMsg{msg: msg, events: 1}
			return
		}
		if em.events == 1 {
			// The first event's data may be shared (Publish's contract):
			// the packed message gets a buffer of its own.
			em.msg.Data = append(make([]byte, 0, min(maxBytes, 8*len(em.msg.Data))), em.msg.Data...)
		}
		em.msg.Data = events.AppendToMessage(em.msg.Data, msg.Data)
		em.events++
		return
	}
	k.open = append(k.open, eventMsg{msg: msg, events: 1})
}

// flush hands every open message to send.
func (k *packer) flush(send func(eventMsg)) {
	for _, em := range k.open {
		send(em)
	}
	clear(k.open)
	k.open = k.open[:0]
}

func (p *EventPublisher) publish(ctx context.Context, em eventMsg) {
	fut, err := p.js.PublishMsgAsync(em.msg)
	if err != nil {
		p.retry(ctx, em, err)
		return
	}
	p.acks <- pendingEvent{eventMsg: em, future: fut}
}

// maxConcurrentRetries bounds the messages retried at once. When a stream
// leader is lost, every message in flight fails together: retried one
// after another, the last would come long after the stream's dedup window.
const maxConcurrentRetries = 256

func (p *EventPublisher) awaitAcks(ctx context.Context) {
	defer p.retrying.Wait()
	for pe := range p.acks {
		select {
		case <-pe.future.Ok():
			p.published.Add(uint64(pe.events))
			p.acknowledged.Add(1)
		case err := <-pe.future.Err():
			p.retryAsync(ctx, pe.eventMsg, err)
		}
	}
}

// retryAsync retries em on a goroutine of its own once one of the
// maxConcurrentRetries slots is free. Its caller must come before Run
// closes p.acks.
func (p *EventPublisher) retryAsync(ctx context.Context, em eventMsg, cause error) {
	p.retrySlots <- struct{}{}
	p.retrying.Go(func() {
		defer func() { <-p.retrySlots }()
		p.retry(ctx, em, cause)
	})
}

// retry republishes synchronously with backoff; the stream drops duplicates
// by Nats-Msg-Id, so a publish that did land is not stored twice.
func (p *EventPublisher) retry(ctx context.Context, em eventMsg, cause error) {
	backoff := retryBackoffMin
	for attempt := 1; attempt <= p.retries && ctx.Err() == nil; attempt++ {
		p.retried.Add(1)
		select {
		case <-ctx.Done():
			continue
		case <-time.After(backoff):
		}
		pctx, cancel := context.WithTimeout(ctx, eventAckTimeout)
		_, err := p.js.PublishMsg(pctx, em.msg)
		cancel()
		if err == nil {
			p.published.Add(uint64(em.events))
			p.acknowledged.Add(1)
			return
		}
		cause = err
		backoff = min(2*backoff, retryBackoffMax)
	}
	p.failed.Add(uint64(em.events))
	p.log.Error().Err(cause).Str("first_event_id", em.msg.Header.Get(jetstream.MsgIDHeader)).Int("events", em.events).
		Msg("decision events not published after retries")
}

// Wait blocks until every publish has been acknowledged or given up.
func (p *EventPublisher) Wait() { p.done.Wait() }

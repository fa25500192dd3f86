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
)

// EventPublisher sends decision events to their stream off the request
// path: a bounded buffer, retries with the same Nats-Msg-Id (so the stream
// deduplicates), and counters for what was published, retried, dropped or
// failed. Nothing is lost silently.
//
// Where the stream allows it (NATS 2.14+, AllowBatchPublish, which
// bus.Provision sets), events go out as one fast-ingest batch: still one
// message per event with its own Nats-Msg-Id, but the stream acknowledges
// every few hundred messages instead of each one. Per-message
// acknowledgements were a third of the stream's work and most of the
// publisher's at 100k events/s. Otherwise each event is an asynchronous
// publish with its own acknowledgement.
type EventPublisher struct {
	js      jetstream.JetStream
	stream  string
	log     zerolog.Logger
	retries int
	queue   chan *nats.Msg
	acks    chan pendingEvent

	batched   atomic.Bool
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
	// Published events were acknowledged by the stream.
	Published uint64
	// Retried counts event publishes sent again after a failure.
	Retried uint64
	// Dropped events found the buffer full.
	Dropped uint64
	// Failed events were given up after every retry.
	Failed uint64
	// Buffered events wait to be published.
	Buffered int
	// Batched tells that Run publishes fast-ingest batches, not one
	// acknowledged message per event.
	Batched bool
}

type pendingEvent struct {
	msg    *nats.Msg
	future jetstream.PubAckFuture
}

// MaxEventsInFlight bounds per-message publishes awaiting their
// acknowledgement. At tens
// of thousands of events a second the stream's acknowledgements come
// milliseconds later: fewer would stall the publishers (nats.go's default
// is 4,000).
const MaxEventsInFlight = 16384

// EventPublishers is how many goroutines hand events to the connection in
// the per-message mode: one alone fell behind at ~70k selections/s on 16
// cores.
const EventPublishers = 4

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
func NewEventPublisher(nc *nats.Conn, stream string, log zerolog.Logger, buffer, retries int) (*EventPublisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(eventAckTimeout), jetstream.WithPublishAsyncMaxPending(MaxEventsInFlight))
	if err != nil {
		return nil, err
	}
	p := &EventPublisher{
		js: js, stream: stream, log: log, retries: retries,
		queue:      make(chan *nats.Msg, buffer),
		acks:       make(chan pendingEvent, MaxEventsInFlight),
		retrySlots: make(chan struct{}, maxConcurrentRetries),
	}
	p.openBatch = p.openFastBatch
	return p, nil
}

// Publish queues msg, which carries its Nats-Msg-Id and keeps its own
// buffers (a retry may resend it). It never blocks: a full buffer drops
// the event, counts it and returns false.
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
		Published: p.published.Load(), Retried: p.retried.Load(),
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
// gets one acknowledged publish per event.
func (p *EventPublisher) batchAllowed(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, eventAckTimeout)
	defer cancel()
	st, err := p.js.Stream(lctx, p.stream)
	if err != nil {
		p.log.Warn().Err(err).Str("stream", p.stream).Msg("look up the decision stream: publishing one acknowledged message per event")
		return false
	}
	if !st.CachedInfo().Config.AllowBatchPublish {
		p.log.Info().Str("stream", p.stream).Msg("the decision stream does not allow batched publishing (NATS before 2.14, or not provisioned by this version): publishing one acknowledged message per event; `orchestrator provision` enables it")
		return false
	}
	return true
}

// publishAll is one publishing goroutine of run.
func (p *EventPublisher) publishAll(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case msg := <-p.queue:
			p.publish(ctx, msg)
		case <-stop:
			p.drainQueue(func(msg *nats.Msg) { p.publish(ctx, msg) })
			return
		}
	}
}

// drainQueue hands each event still buffered to send, without waiting for
// more: what Run does once stop is closed.
func (p *EventPublisher) drainQueue(send func(*nats.Msg)) {
	for {
		select {
		case msg := <-p.queue:
			send(msg)
		default:
			return
		}
	}
}

func (p *EventPublisher) publish(ctx context.Context, msg *nats.Msg) {
	fut, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		p.retry(ctx, msg, err)
		return
	}
	p.acks <- pendingEvent{msg: msg, future: fut}
}

// maxConcurrentRetries bounds the events retried at once. When a stream
// leader is lost, every event in flight fails together: retried one after
// another, the last would come long after the stream's dedup window.
const maxConcurrentRetries = 256

func (p *EventPublisher) awaitAcks(ctx context.Context) {
	defer p.retrying.Wait()
	for pe := range p.acks {
		select {
		case <-pe.future.Ok():
			p.published.Add(1)
			p.acknowledged.Add(1)
		case err := <-pe.future.Err():
			p.retryAsync(ctx, pe.msg, err)
		}
	}
}

// retryAsync retries msg on a goroutine of its own once one of the
// maxConcurrentRetries slots is free. Its caller must come before Run
// closes p.acks.
func (p *EventPublisher) retryAsync(ctx context.Context, msg *nats.Msg, cause error) {
	p.retrySlots <- struct{}{}
	p.retrying.Go(func() {
		defer func() { <-p.retrySlots }()
		p.retry(ctx, msg, cause)
	})
}

// retry republishes synchronously with backoff; the stream drops duplicates
// by Nats-Msg-Id, so a publish that did land is not stored twice.
func (p *EventPublisher) retry(ctx context.Context, msg *nats.Msg, cause error) {
	backoff := retryBackoffMin
	for attempt := 1; attempt <= p.retries && ctx.Err() == nil; attempt++ {
		p.retried.Add(1)
		select {
		case <-ctx.Done():
			continue
		case <-time.After(backoff):
		}
		pctx, cancel := context.WithTimeout(ctx, eventAckTimeout)
		_, err := p.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			p.published.Add(1)
			p.acknowledged.Add(1)
			return
		}
		cause = err
		backoff = min(2*backoff, retryBackoffMax)
	}
	p.failed.Add(1)
	p.log.Error().Err(cause).Str("event_id", msg.Header.Get(jetstream.MsgIDHeader)).Msg("decision event not published after retries")
}

// Wait blocks until every publish has been acknowledged or given up.
func (p *EventPublisher) Wait() { p.done.Wait() }

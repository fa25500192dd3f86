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

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
)

// publisher sends decision events to the selection stream off the request
// path: a bounded buffer, asynchronous publishes, retries with the same
// Nats-Msg-Id (so the stream deduplicates), and counters for what was
// dropped or failed. Nothing is lost silently. Events are encoded by the
// request handlers (in parallel, after the reply went out) so that the
// EventPublishers publishing goroutines keep up with every worker together.
type publisher struct {
	js      jetstream.JetStream
	log     zerolog.Logger
	retries int
	// sizeHint is the largest event encoded so far: buffers start that big.
	sizeHint atomic.Int64
	queue    chan *nats.Msg
	acks     chan pendingEvent

	published atomic.Uint64
	retried   atomic.Uint64
	dropped   atomic.Uint64
	failed    atomic.Uint64
	done      sync.WaitGroup
}

type pendingEvent struct {
	msg    *nats.Msg
	future jetstream.PubAckFuture
}

// MaxEventsInFlight bounds publishes awaiting their acknowledgement. At tens
// of thousands of events a second the stream's acknowledgements come
// milliseconds later: fewer would stall the publishers (nats.go's default
// is 4,000).
const MaxEventsInFlight = 16384

// EventPublishers is how many goroutines hand events to the connection:
// one alone fell behind at ~70k selections/s on 16 cores.
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

// eventRetrySpan is the longest time from an event's first publish to its
// last retry, once its retries have started: the stream's dedup window must
// cover it, or a retry of an event that did land (its ack lost) is stored
// twice. When more than maxConcurrentRetries publishes fail together, the
// later ones wait for a slot first, and one may come after the window; the
// stream then holds it twice and the sink, keyed by event id, stores it
// once. It saturates at the longest Duration instead of overflowing.
func eventRetrySpan(retries int) time.Duration {
	span := eventAckTimeout
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

func newPublisher(js jetstream.JetStream, log zerolog.Logger, buffer, retries int) *publisher {
	return &publisher{
		js: js, log: log, retries: retries,
		queue: make(chan *nats.Msg, buffer),
		acks:  make(chan pendingEvent, MaxEventsInFlight),
	}
}

// enqueue encodes ev and queues it; it never blocks: a full buffer drops
// the event and counts it.
func (p *publisher) enqueue(ev *events.SelectionEvent) {
	// The message keeps its own buffer: a retry may resend it after the ack.
	data, err := ev.AppendJSON(make([]byte, 0, p.sizeHint.Load()))
	if err != nil { // a non-finite number or out-of-range time; counted, not hidden
		p.failed.Add(1)
		p.log.Error().Err(err).Str("event_id", ev.EventID).Msg("encode decision event")
		return
	}
	if n := int64(len(data)); n > p.sizeHint.Load() {
		p.sizeHint.Store(n)
	}
	msg := &nats.Msg{Subject: bus.SelectionEventSubject(ev.TaskCategory), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.EventID)
	select {
	case p.queue <- msg:
	default:
		if p.dropped.Add(1)%1000 == 1 {
			p.log.Warn().Uint64("dropped_total", p.dropped.Load()).Msg("decision event buffer full: dropping events")
		}
	}
}

// run publishes until stop is closed and the buffer is empty, or until the
// flush deadline of ctx.
func (p *publisher) run(ctx context.Context, stop <-chan struct{}) {
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		p.awaitAcks(ctx)
	}()
	var publishers sync.WaitGroup
	for range EventPublishers {
		publishers.Go(func() { p.publishAll(ctx, stop) })
	}
	publishers.Wait()
	close(p.acks)
}

// publishAll is one publishing goroutine of run.
func (p *publisher) publishAll(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case msg := <-p.queue:
			p.publish(ctx, msg)
		case <-stop:
			for {
				select {
				case msg := <-p.queue:
					p.publish(ctx, msg)
				default:
					return
				}
			}
		}
	}
}

func (p *publisher) publish(ctx context.Context, msg *nats.Msg) {
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

func (p *publisher) awaitAcks(ctx context.Context) {
	var retries sync.WaitGroup
	defer retries.Wait()
	slots := make(chan struct{}, maxConcurrentRetries)
	for pe := range p.acks {
		select {
		case <-pe.future.Ok():
			p.published.Add(1)
		case err := <-pe.future.Err():
			slots <- struct{}{}
			retries.Go(func() {
				defer func() { <-slots }()
				p.retry(ctx, pe.msg, err)
			})
		}
	}
}

// retry republishes synchronously with backoff; the stream drops duplicates
// by Nats-Msg-Id, so a publish that did land is not stored twice.
func (p *publisher) retry(ctx context.Context, msg *nats.Msg, cause error) {
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
			return
		}
		cause = err
		backoff = min(2*backoff, retryBackoffMax)
	}
	p.failed.Add(1)
	p.log.Error().Err(cause).Str("event_id", msg.Header.Get(jetstream.MsgIDHeader)).Msg("decision event not published after retries")
}

// wait blocks until every publish has been acknowledged or given up.
func (p *publisher) wait() { p.done.Wait() }

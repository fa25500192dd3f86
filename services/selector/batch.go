package selector

import (
	"context"
	"fmt"
	"time"

	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Fast-ingest batch settings. The stream acknowledges every batchFlow
// messages (fewer when several publishers share it); batchOutstanding
// unacknowledged rounds of that may be in flight before Add waits.
const (
	batchFlow        = 500
	batchOutstanding = 4
	// batchIdleCommit closes a batch that has had no event for this long,
	// so that the events after its last acknowledgement are confirmed
	// and the server forgets the batch.
	batchIdleCommit = 100 * time.Millisecond
	// batchMaxWait closes the batch, at the next event or idle check, once
	// its oldest unacknowledged event has waited this long: a trickle of
	// events would otherwise wait for a flow acknowledgement (every few
	// hundred events) for minutes, and a stream that stopped storing them
	// would go unnoticed as long.
	batchMaxWait = 500 * time.Millisecond
	// After a batch breaks, events go out singly for at least
	// batchHoldOffMin, doubling with each break in a row up to
	// batchHoldOffMax: a batch whose first message the stream refuses
	// (batches switched off, too many in flight) waits out the whole
	// acknowledgement timeout, where a single publish hears at once.
	batchHoldOffMin = time.Second
	batchHoldOffMax = 30 * time.Second
)

// publishBatches is Run for a stream that takes fast-ingest batches: one
// goroutine packs the queued events and adds each message to the open
// batch.
func (p *EventPublisher) publishBatches(ctx context.Context, stop <-chan struct{}) {
	b := &eventBatch{p: p}
	var k packer
	send := func(em eventMsg) { b.add(ctx, em) }
	idle := time.NewTicker(batchIdleCommit)
	defer idle.Stop()
	lastAdd := time.Now()
	for {
		select {
		case msg := <-p.queue:
			p.packQueued(&k, msg, send)
			lastAdd = time.Now()
		case <-idle.C:
			if time.Since(lastAdd) >= batchIdleCommit || b.overdue() {
				b.commit(ctx)
			}
		case <-stop:
			p.drainQueue(&k, send)
			b.commit(ctx)
			return
		}
	}
}

// eventBatch is the open fast-ingest batch and the messages of events sent
// in it that the stream has not acknowledged yet. With gap detection on (the
// default), an acknowledgement of batch sequence n means every message up
// to n is stored. A batch that breaks (a lost message, a lost leader, a
// timeout) is given up: its unacknowledged messages are retried one by
// one, like failed single publishes, and the stream drops any that did land
// by their Nats-Msg-Id. The messages after it go out one by one too, for a
// hold-off and until the stream acknowledges one.
type eventBatch struct {
	p  *EventPublisher
	fp jetstreamext.FastPublisher // nil: no batch open
	// unacked[i] went out as batch sequence acked+1+i, at sentAt[i].
	unacked []eventMsg
	sentAt  []time.Time
	acked   uint64
	// broken: the last batch broke; events go singly until holdUntil and
	// until p.acknowledged has passed acknowledgedAtBreak.
	broken              bool
	acknowledgedAtBreak uint64
	holdUntil           time.Time
	holdOff             time.Duration
}

// overdue tells that the oldest unacknowledged event has waited
// batchMaxWait.
func (b *eventBatch) overdue() bool {
	return b.fp != nil && len(b.sentAt) > 0 && time.Since(b.sentAt[0]) >= batchMaxWait
}

func (b *eventBatch) add(ctx context.Context, em eventMsg) {
	if b.overdue() {
		b.commit(ctx)
	}
	if b.broken {
		if b.p.acknowledged.Load() == b.acknowledgedAtBreak || time.Now().Before(b.holdUntil) {
			b.p.publish(ctx, em)
			return
		}
		b.broken = false
	}
	b.unacked = append(b.unacked, em)
	b.sentAt = append(b.sentAt, time.Now())
	if b.fp == nil {
		fp, err := b.p.openBatch()
		if err != nil {
			b.abandon(ctx, err)
			return
		}
		b.fp, b.acked = fp, 0
	}
	ack, err := b.fp.AddMsg(em.msg)
	if err != nil {
		b.abandon(ctx, err)
		return
	}
	b.release(ack.AckSequence)
}

// release counts the events of the messages up to batch sequence seq as
// published.
func (b *eventBatch) release(seq uint64) {
	if seq <= b.acked {
		return
	}
	n := min(seq-b.acked, uint64(len(b.unacked)))
	var events uint64
	for _, em := range b.unacked[:n] {
		events += uint64(em.events)
	}
	b.p.published.Add(events)
	clear(b.unacked[:n]) // let the sent messages go
	b.unacked, b.sentAt = b.unacked[n:], b.sentAt[n:]
	b.acked = seq
	b.holdOff = 0 // the stream takes batches again
}

// abandon gives the open batch up after err: see eventBatch.
func (b *eventBatch) abandon(ctx context.Context, err error) {
	b.p.log.Warn().Err(err).Str("stream", b.p.stream).Int("unacknowledged_messages", len(b.unacked)).
		Msg("decision event batch broke: retrying its unacknowledged events one by one")
	if b.fp != nil && !b.fp.IsClosed() {
		// Close with a context already done only ends the batch's
		// acknowledgement subscription.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _ = b.fp.Close(cctx)
	}
	for _, em := range b.unacked {
		em.msg.Reply = "" // AddMsg set the batch's; a single publish makes its own
		b.p.retryAsync(ctx, em, err)
	}
	clear(b.unacked)
	b.unacked, b.sentAt = b.unacked[:0], b.sentAt[:0]
	b.fp, b.acked = nil, 0
	b.holdOff = min(max(2*b.holdOff, batchHoldOffMin), batchHoldOffMax)
	b.broken, b.acknowledgedAtBreak, b.holdUntil = true, b.p.acknowledged.Load(), time.Now().Add(b.holdOff)
}

// commit closes the open batch. Its final acknowledgement counts the
// messages the stream took: all of them, or, when the stream had already
// ended the batch at a gap (a leader lost with messages in flight), those
// before it, and the rest are sent again. It runs past ctx's end (the
// flush deadline), bounded by the acknowledgement timeout: the events are
// sent, and only the acknowledgement tells whether they were stored.
func (b *eventBatch) commit(ctx context.Context) {
	if b.fp == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventAckTimeout)
	defer cancel()
	ack, err := b.fp.Close(cctx)
	if err != nil {
		b.abandon(ctx, err)
		return
	}
	b.fp = nil
	sent := b.acked + uint64(len(b.unacked))
	b.release(min(ack.BatchSize, sent))
	if len(b.unacked) > 0 {
		b.abandon(ctx, fmt.Errorf("%w: the stream took %d of the batch's %d messages", errBatchCut, ack.BatchSize, sent))
	}
}

// openFastBatch is EventPublisher.openBatch outside tests.
func (p *EventPublisher) openFastBatch() (jetstreamext.FastPublisher, error) {
	return jetstreamext.NewFastPublisher(p.js,
		jetstreamext.FastPublishFlowControl{Flow: batchFlow, MaxOutstandingAcks: batchOutstanding, AckTimeout: eventAckTimeout},
		jetstreamext.WithFastPublisherErrorHandler(p.batchError))
}

// batchError logs what the stream reports about a batch (gaps, refused
// messages) without waiting on the publisher: the batch it broke is given
// up when the publisher next adds to it.
func (p *EventPublisher) batchError(err error) {
	p.log.Warn().Err(err).Str("stream", p.stream).Msg("decision event batch")
}

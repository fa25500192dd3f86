// Package eventlog reads the decision events of the ORCH_SELECTIONS stream:
// a time window of recorded ones (replay, what-if) or new ones as they come
// (tail). It uses ordered consumers, which cost the server nothing durable.
package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
)

// Sentinel errors of the package.
var (
	// ErrTime: a --since/--until value is neither a duration nor a RFC 3339 time.
	ErrTime = errors.New("bad time")
	// ErrWindow: the window ends before it starts.
	ErrWindow = errors.New("bad time window")
	// ErrStream: the selection stream cannot be read.
	ErrStream = errors.New("cannot read the selection stream")
	// ErrStop, returned by a callback, ends a read early without an error.
	ErrStop = errors.New("stop reading")
)

// ParseTime reads a window bound: a Go duration means that long before now
// ("90m", "24h"; a leading '-' is allowed), anything else must be RFC 3339
// ("2026-11-25T12:00:00Z").
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w %q: want a duration before now (e.g. 1h, 30m) or an RFC 3339 time (e.g. 2026-11-25T12:00:00Z)", ErrTime, s)
}

// Window is a span of stream time; a zero Until means up to the last event
// stored when the read starts.
type Window struct {
	Since, Until time.Time
}

// Check returns an error wrapping ErrWindow when the window ends before it
// starts.
func (w Window) Check() error {
	if !w.Until.IsZero() && w.Until.Before(w.Since) {
		return fmt.Errorf("%w: --until %s is before --since %s", ErrWindow, w.Until.Format(time.RFC3339), w.Since.Format(time.RFC3339))
	}
	return nil
}

// Record is one stored event.
type Record struct {
	Event events.SelectionEvent
	// Seq and Stored are the stream sequence and the time the stream stored
	// the message the event came in; the events packed in one message
	// share them.
	Seq     uint64
	Stored  time.Time
	Subject string
}

// Stats sums up a replay.
type Stats struct {
	// Total is how many messages the stream held from Since to its end
	// when the replay started; Scanned how many of them were read (fewer
	// when Until ends the window first). A message holds one event or more.
	Total, Scanned uint64
	// Delivered events were handed to the callback; Undecodable were skipped.
	Delivered, Undecodable uint64
}

// Progress is told how many of the total have been scanned.
type Progress func(scanned, total uint64)

// Replay calls fn, in stream order, with each event stored in w. It stops at
// Until, or once it has read what the stream held when it started (events
// published meanwhile are left out), or when fn returns ErrStop. Events that
// do not decode are counted and skipped.
func Replay(ctx context.Context, js jetstream.JetStream, w Window, fn func(Record) error, progress Progress) (Stats, error) {
	var st Stats
	if err := w.Check(); err != nil {
		return st, err
	}
	stream, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		return st, fmt.Errorf("%w %s: %w", ErrStream, bus.SelectionStream, err)
	}
	state := stream.CachedInfo().State
	// Nothing stored at or after Since: an ordered consumer would wait forever.
	if state.Msgs == 0 || state.LastTime.Before(w.Since) {
		return st, nil
	}
	lastSeq := state.LastSeq
	since := w.Since
	cons, err := js.OrderedConsumer(ctx, bus.SelectionStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.SelectionEventWildcard},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return st, fmt.Errorf("%w: consumer on %s: %w", ErrStream, bus.SelectionStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return st, fmt.Errorf("%w: consumer on %s: %w", ErrStream, bus.SelectionStream, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return st, fmt.Errorf("%w: %w", ErrStream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return st, fmt.Errorf("%w: %w", ErrStream, err)
		}
		seq := md.Sequence.Stream
		if st.Total == 0 {
			st.Total = lastSeq - min(seq, lastSeq) + 1
		}
		if seq > lastSeq || (!w.Until.IsZero() && md.Timestamp.After(w.Until)) {
			return st, nil
		}
		st.Scanned++
		delivered, undecodable, err := eachRecord(msg, Record{Seq: seq, Stored: md.Timestamp, Subject: msg.Subject()}, fn)
		st.Delivered += delivered
		st.Undecodable += undecodable
		if errors.Is(err, ErrStop) {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		if progress != nil {
			progress(st.Scanned, st.Total)
		}
		// NumPending 0: caught up (the last message may have aged out meanwhile).
		if seq >= lastSeq || md.NumPending == 0 {
			return st, nil
		}
	}
}

// Tail calls fn with each event published from now on, of one category or
// of all when category is "", until ctx ends (then it returns nil) or fn
// returns an error (ErrStop ends it without one). ready, when not nil, is
// called once the consumer exists: events published after it are seen.
// Undecodable events are left out and counted in skipped.
func Tail(ctx context.Context, js jetstream.JetStream, category string, fn func(Record) error, ready func()) (skipped uint64, err error) {
	subject := bus.SelectionEventWildcard
	if category != "" {
		subject = bus.SelectionEventSubject(category)
	}
	cons, err := js.OrderedConsumer(ctx, bus.SelectionStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return 0, fmt.Errorf("%w: consumer on %s: %w", ErrStream, bus.SelectionStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("%w: consumer on %s: %w", ErrStream, bus.SelectionStream, err)
	}
	defer it.Stop()
	if ready != nil {
		ready()
	}
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return skipped, nil
			}
			return skipped, fmt.Errorf("%w: %w", ErrStream, err)
		}
		base := Record{Subject: msg.Subject()}
		if md, err := msg.Metadata(); err == nil {
			base.Seq, base.Stored = md.Sequence.Stream, md.Timestamp
		}
		_, undecodable, err := eachRecord(msg, base, fn)
		skipped += undecodable
		if errors.Is(err, ErrStop) {
			return skipped, nil
		}
		if err != nil {
			return skipped, err
		}
	}
}

// eachRecord calls fn with each event of msg, as base with the event set,
// until fn returns an error, which it returns. It counts the events handed
// to fn and those that do not decode; a message with no event at all
// counts as one undecodable.
func eachRecord(msg jetstream.Msg, base Record, fn func(Record) error) (delivered, undecodable uint64, err error) {
	for data := range events.Each(msg.Data()) {
		rec := base
		if err := json.Unmarshal(data, &rec.Event); err != nil {
			undecodable++
			continue
		}
		delivered++
		if err := fn(rec); err != nil {
			return delivered, undecodable, err
		}
	}
	if delivered+undecodable == 0 {
		undecodable = 1
	}
	return delivered, undecodable, nil
}

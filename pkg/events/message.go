package events

import (
	"bytes"
	"iter"
)

// A decision message on the selection stream carries one or more events'
// JSON, one per line (NDJSON). At low load each message holds one event,
// byte for byte the event alone; under load the selector packs the events
// waiting for the stream into fewer messages, since the stream's cost is
// per message far more than per byte. The message's Nats-Msg-Id is its
// first event's id.

// MaxPerMessage is the most events the selector packs into one message.
const MaxPerMessage = 256

// Each yields the JSON of every event in a decision message, in order,
// skipping blank lines.
func Each(message []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for line := range bytes.Lines(message) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if !yield(line) {
				return
			}
		}
	}
}

// AppendToMessage appends the JSON of one event (no newline in it, as
// AppendJSON writes it) to a decision message.
func AppendToMessage(message, event []byte) []byte {
	if len(message) > 0 {
		message = append(message, '\n')
	}
	return append(message, event...)
}

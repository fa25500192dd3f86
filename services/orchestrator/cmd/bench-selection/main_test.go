package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestRunReportsEveryPhase runs the bench briefly and checks that it
// reports the load levels, the drain and the sustained phase. A smoke test:
// at these loads nothing is dropped and the backlog stays small, so it
// checks the phases run and report, not the figures; run itself fails
// unless every event published was stored (or, with -sink-discard,
// acknowledged).
func TestRunReportsEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system twice")
	}
	for _, tc := range []struct {
		name  string
		o     options
		store string
		verb  string
	}{
		{"sqlite", options{sinks: 1}, "SQLite", "stored"},
		{"discard, two sinks", options{sinks: 2, sinkDiscard: true}, `nothing \(-sink-discard\)`, "acknowledged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.duration, o.inflight, o.gpus, o.eventPersist = 200*time.Millisecond, []int{1, 4}, 8, "async"
			var out bytes.Buffer
			if err := run(context.Background(), o, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				`(?m)^\| 1 \| \d+ \| `,
				`(?m)^\| 4 \| \d+ \| `,
				`metrics-sink \(` + strconv.Itoa(o.sinks) + `\): drained a backlog of [1-9]\d* events into ` + tc.store,
				`sustained, 4 in flight for 200ms with the sinks consuming: [1-9]\d* selections/s .* 0 events dropped, `,
				`during the load the stream took in [1-9]\d* events/s in [1-9]\d* messages/s \(\d+\.\d events each\) and the sinks ` + tc.verb + ` \d+ rows/s into ` + tc.store,
				`backlog \(in the stream, not yet stored\) at each eighth of the load: ((\d+|-) ){7}(\d+|-); largest \d+; \d+ when the load ended; all stored \d`,
			} {
				if !regexp.MustCompile(want).MatchString(out.String()) {
					t.Errorf("output lacks %s:\n%s", want, out.String())
				}
			}
		})
	}
}

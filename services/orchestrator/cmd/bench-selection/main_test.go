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
// reports the load levels, the drain and the sustained phase; run itself
// fails unless every published event was stored (or, with -sink-discard,
// acknowledged).
func TestRunReportsEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system twice")
	}
	for _, tc := range []struct {
		name  string
		o     options
		store string
	}{
		{"sqlite", options{sinks: 1}, "SQLite"},
		{"discard, two sinks", options{sinks: 2, sinkDiscard: true}, `nothing \(-sink-discard\)`},
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
				`sustained, 4 in flight for 200ms with the sinks consuming: [1-9]\d* selections/s .* 0 events dropped, .* into ` + tc.store,
				`backlog \(published, not yet stored\) at each eighth of the load: (\d+ ){7}\d+; largest \d+; \d+ when the load ended`,
			} {
				if !regexp.MustCompile(want).MatchString(out.String()) {
					t.Errorf("output lacks %s:\n%s", want, out.String())
				}
			}
		})
	}
}

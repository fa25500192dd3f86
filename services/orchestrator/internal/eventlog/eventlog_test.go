package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr error
	}{
		{"1h", now.Add(-time.Hour), nil},
		{"-90m", now.Add(-90 * time.Minute), nil},
		{" 30s ", now.Add(-30 * time.Second), nil},
		{"2026-11-25T10:30:00Z", time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC), nil},
		{"2026-11-25T10:30:00.5+01:00", time.Date(2026, 11, 25, 9, 30, 0, 5e8, time.UTC), nil},
		{"yesterday", time.Time{}, ErrTime},
		{"2026-11-25", time.Time{}, ErrTime},
		{"", time.Time{}, ErrTime},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in, now)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !got.Equal(tc.want) {
				t.Fatalf("ParseTime(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, category string, data []byte) {
	t.Helper()
	if _, err := js.Publish(ctx, bus.SelectionEventSubject(category), data); err != nil {
		t.Fatal(err)
	}
}

func TestReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)

	empty, err := Replay(ctx, js, Window{}, func(Record) error { t.Fatal("an event in an empty stream"); return nil }, nil)
	if err != nil || empty != (Stats{}) {
		t.Fatalf("empty stream: %+v, %v", empty, err)
	}
	event := func(i int) []byte {
		data, err := json.Marshal(events.SelectionEvent{EventID: fmt.Sprint("e", i), TaskCategory: "code"})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for i := range 5 {
		publish(t, ctx, js, "code", event(i))
		if i == 2 {
			publish(t, ctx, js, "code", []byte("not json"))
			publish(t, ctx, js, "code", []byte("\n"))
		}
	}
	// A message the selector packed under load: three events, one broken.
	var packed []byte
	for _, ev := range [][]byte{event(5), []byte(`{"event_id":`), event(6)} {
		packed = events.AppendToMessage(packed, ev)
	}
	publish(t, ctx, js, "code", packed)
	tests := []struct {
		name    string
		stopAt  int
		want    Stats
		wantIDs int
		// wantProgress: the scanned counts reported, in order.
		wantProgress []uint64
	}{
		{name: "everything", want: Stats{Total: 8, Scanned: 8, Delivered: 7, Undecodable: 3}, wantIDs: 7, wantProgress: []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{name: "stopped by the callback", stopAt: 2, want: Stats{Total: 8, Scanned: 2, Delivered: 2}, wantIDs: 2, wantProgress: []uint64{1}},
		{name: "stopped inside a packed message", stopAt: 6, want: Stats{Total: 8, Scanned: 8, Delivered: 6, Undecodable: 2}, wantIDs: 6, wantProgress: []uint64{1, 2, 3, 4, 5, 6, 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			var seqs []uint64
			var progress []uint64
			st, err := Replay(ctx, js, Window{}, func(r Record) error {
				ids = append(ids, r.Event.EventID)
				seqs = append(seqs, r.Seq)
				if len(ids) == tc.stopAt {
					return ErrStop
				}
				return nil
			}, func(scanned, total uint64) { progress = append(progress, scanned) })
			if err != nil {
				t.Fatal(err)
			}
			if st != tc.want || len(ids) != tc.wantIDs {
				t.Fatalf("stats %+v ids %v, want %+v and %d ids", st, ids, tc.want, tc.wantIDs)
			}
			if !slices.Equal(progress, tc.wantProgress) {
				t.Fatalf("progress %v, want %v", progress, tc.wantProgress)
			}
			if want := fmt.Sprint("e", len(ids)-1); ids[len(ids)-1] != want {
				t.Fatalf("ids %v, want the last %s", ids, want)
			}
			if len(seqs) == 7 && (seqs[5] != 8 || seqs[6] != 8) {
				t.Fatalf("the packed events' sequences %v, want both 8", seqs[5:])
			}
		})
	}
	boom := errors.New("boom")
	if _, err := Replay(ctx, js, Window{}, func(Record) error { return boom }, nil); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
	if _, err := Replay(ctx, js, Window{Since: time.Now(), Until: time.Now().Add(-time.Hour)}, nil, nil); !errors.Is(err, ErrWindow) {
		t.Fatalf("inverted window: %v", err)
	}
}

// Tail hands over every event of a packed message, of its category only.
func TestTailReadsPackedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)

	var packed []byte
	for _, ev := range []string{`{"event_id":"a","task_category":"code"}`, `not json`, `{"event_id":"b","task_category":"code"}`} {
		packed = events.AppendToMessage(packed, []byte(ev))
	}
	ready := make(chan struct{})
	type result struct {
		ids     []string
		skipped uint64
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.skipped, r.err = Tail(ctx, js, "code", func(rec Record) error {
			r.ids = append(r.ids, rec.Event.EventID)
			if len(r.ids) == 3 {
				return ErrStop
			}
			return nil
		}, func() { close(ready) })
		done <- r
	}()
	<-ready
	publish(t, ctx, js, "math", []byte(`{"event_id":"other","task_category":"math"}`))
	publish(t, ctx, js, "code", packed)
	publish(t, ctx, js, "code", nil) // an empty message: one undecodable event
	publish(t, ctx, js, "code", []byte(`{"event_id":"c","task_category":"code"}`))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(r.ids, want) || r.skipped != 2 {
		t.Fatalf("tail read %v skipping %d, want %v skipping 2", r.ids, r.skipped, want)
	}
}

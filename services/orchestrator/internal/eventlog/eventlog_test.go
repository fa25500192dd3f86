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
	for i := range 5 {
		data, err := json.Marshal(events.SelectionEvent{EventID: fmt.Sprint("e", i), TaskCategory: "code"})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ctx, js, "code", data)
		if i == 2 {
			publish(t, ctx, js, "code", []byte("not json"))
		}
	}
	tests := []struct {
		name    string
		stopAt  int
		want    Stats
		wantIDs int
		// wantProgress: the scanned counts reported, in order.
		wantProgress []uint64
	}{
		{name: "everything", want: Stats{Total: 6, Scanned: 6, Delivered: 5, Undecodable: 1}, wantIDs: 5, wantProgress: []uint64{1, 2, 3, 4, 5, 6}},
		{name: "stopped by the callback", stopAt: 2, want: Stats{Total: 6, Scanned: 2, Delivered: 2}, wantIDs: 2, wantProgress: []uint64{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			var progress []uint64
			st, err := Replay(ctx, js, Window{}, func(r Record) error {
				ids = append(ids, r.Event.EventID)
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

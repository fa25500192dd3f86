package events

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestEach(t *testing.T) {
	for _, tc := range []struct {
		name    string
		message string
		want    []string
	}{
		{"empty", "", nil},
		{"one event, as published alone", `{"a":1}`, []string{`{"a":1}`}},
		{"two", "{\"a\":1}\n{\"a\":2}", []string{`{"a":1}`, `{"a":2}`}},
		{"blank lines and a trailing newline", "\n{\"a\":1}\r\n\n  {\"a\":2}\n", []string{`{"a":1}`, `{"a":2}`}},
		{"a broken line is still a line", "{\"a\":1}\n{\"a\":", []string{`{"a":1}`, `{"a":`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for ev := range Each([]byte(tc.message)) {
				got = append(got, string(ev))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Each(%q) = %q, want %q", tc.message, got, tc.want)
			}
		})
	}
}

// Any events packed with AppendToMessage come back from Each, in order
// and whole: AppendJSON never writes a newline, whatever the strings hold.
func TestPackedEventsComeBack(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ids := rapid.SliceOfN(rapid.String(), 1, 20).Draw(t, "event ids")
		var message []byte
		for _, id := range ids {
			ev := SelectionEvent{EventID: id, TaskCategory: "code", Timestamp: time.Unix(1, 0).UTC()}
			data, err := ev.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			message = AppendToMessage(message, data)
		}
		var got []string
		for data := range Each(message) {
			var ev SelectionEvent
			if err := json.Unmarshal(data, &ev); err != nil {
				t.Fatalf("event %d of %q: %v", len(got), message, err)
			}
			got = append(got, ev.EventID)
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("event ids %q came back as %q", ids, got)
		}
	})
}

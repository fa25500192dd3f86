package metricssink

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/events"
)

func TestDecodeRecord(t *testing.T) {
	good, err := json.MarshalIndent(makeEvent(1), "", "  ") // not the canonical layout
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		data    string
		wantErr error
	}{
		{"a real event", string(good), nil},
		{"not JSON", "not json at all", ErrBadEvent},
		{"JSON of the wrong shape", `[1,2,3]`, ErrBadEvent},
		{"no event_id", `{"timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m"}`, ErrBadEvent},
		{"no timestamp", `{"event_id":"e","task_category":"code","selected_model":"m"}`, ErrBadEvent},
		{"no task_category", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","selected_model":"m"}`, ErrBadEvent},
		{"no selected_model", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code"}`, ErrBadEvent},
		{"year 10000 in UTC", `{"event_id":"e","timestamp":"9999-12-31T23:30:00-01:00","task_category":"code","selected_model":"m"}`, ErrBadEvent},
		{"year 0 in UTC", `{"event_id":"e","timestamp":"0001-01-01T00:30:00+01:00","task_category":"code","selected_model":"m"}`, ErrBadEvent},
		{"a score beyond 1", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m","final_score":1.7e308}`, ErrBadEvent},
		{"a negative duration", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m","selection_duration_ms":-1}`, ErrBadEvent},
		{"an offset Go cannot write back", `{"event_id":"e","timestamp":"2025-01-01T00:00:00+24:00","task_category":"code","selected_model":"m"}`, ErrBadEvent},
		{"a GPU sample's offset Go cannot write back", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m","gpus":[{"sample":{"timestamp":"2025-01-01T00:00:00Z"},"reserved_mb":0},{"sample":{"timestamp":"2025-01-01T00:00:00-24:00"},"reserved_mb":0}]}`, ErrBadEvent},
		{"a negative gpu_id", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m","gpu_id":-3}`, ErrBadEvent},
		{"minimal", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m"}`, nil},
		{"text after the event", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m"}00`, ErrBadEvent},
		{"a field a newer selector adds (not stored)", `{"event_id":"e","timestamp":"2025-01-01T00:00:00Z","task_category":"code","selected_model":"m","new_field":{"x":1}}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := DecodeRecord([]byte(c.data))
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("error = %v, want %v", err, c.wantErr)
			}
			if c.wantErr != nil {
				return
			}
			if r.Event.EventID == "" {
				t.Fatal("decoded event has no id")
			}
			// event_json is the event's own encoding, whatever the message's layout.
			if want, _ := r.Event.AppendJSON(nil); r.JSON != string(want) {
				t.Fatalf("event_json\n got %s\nwant %s", r.JSON, want)
			}
		})
	}
}

func TestRateMeter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	m := newRateMeter(10*time.Second, t0)
	steps := []struct {
		name string
		add  map[time.Duration]uint64
		at   time.Duration
		want float64
	}{
		{"nothing yet", nil, 500 * time.Millisecond, 0},
		{"100 rows in the first second", map[time.Duration]uint64{500 * time.Millisecond: 100}, time.Second, 100},
		{"the same rows over 5 s", nil, 5 * time.Second, 20},
		{"350 more", map[time.Duration]uint64{8 * time.Second: 350}, 9 * time.Second, 50},
		{"the first slice left the window", nil, 10 * time.Second, 35},
		{"everything left the window", nil, 30 * time.Second, 0},
		{"a new burst after idling", map[time.Duration]uint64{40 * time.Second: 50}, 40*time.Second + 500*time.Millisecond, 5},
	}
	for _, s := range steps {
		for d, n := range s.add {
			m.add(at(d), n)
		}
		if got := m.rate(at(s.at)); got != s.want {
			t.Fatalf("%s: rate = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestReportsList(t *testing.T) {
	want := []string{ReportModelsPerCategory, ReportMultiCategoryEffectiveness, ReportPerformanceByCategory}
	got := Reports()
	if len(got) != len(want) {
		t.Fatalf("Reports() = %v", got)
	}
	for i, r := range got {
		if r.Name != want[i] || r.Description == "" {
			t.Errorf("report %d = %+v, want name %s and a description", i, r, want[i])
		}
	}
}

// FuzzDecodeRecord: whatever DecodeRecord stores, a reader of the row can
// decode with encoding/json (the dashboard does) and encode again to the
// same event_json, which is the encoding of the event its columns come
// from. `go test` runs the seeds; `-fuzz FuzzDecodeRecord` searches further.
func FuzzDecodeRecord(f *testing.F) {
	for _, i := range []int{0, 1, 2} {
		data, err := json.Marshal(benchEvent(i))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	const minimal = `"event_id":"e","timestamp":"2025-01-01T00:00:00+05:30","task_category":"code","selected_model":"m"`
	for _, seed := range []string{
		`{` + minimal + `,"gpu_id":2}`,
		`{` + minimal + "}\v",
		`{` + minimal + `,"selected_model":"m2"}`,                 // a key twice
		`{` + minimal + `,"Event_ID":"x","confidence_score":0.5}`, // a key in another case
		`{` + minimal + `,"deep":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{` + minimal + `,"reason":"a\u0000b\ud800c"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("error %v is not an ErrBadEvent", err)
			}
			return
		}
		if want, err := r.Event.AppendJSON(nil); err != nil || string(want) != r.JSON {
			t.Fatalf("event_json %q is not the encoding of the event its columns come from (%q, %v)", r.JSON, want, err)
		}
		var ev events.SelectionEvent
		if err := json.Unmarshal([]byte(r.JSON), &ev); err != nil {
			t.Fatalf("stored event_json %q does not decode: %v", r.JSON, err)
		}
		again, err := ev.AppendJSON(nil)
		if err != nil || string(again) != r.JSON {
			t.Fatalf("event_json %q decodes and encodes to %q (%v)", r.JSON, again, err)
		}
	})
}

// A decoder that panics on an event makes it poison (ErrBadEvent), not a
// crash that its redelivery would repeat.
func TestDecodeGuarded(t *testing.T) {
	_, err := decodeGuarded([]byte(`{}`), func([]byte) (Record, error) { panic("index out of range") })
	if !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("err = %v, want ErrBadEvent with the panic", err)
	}
	ev := makeEvent(1)
	rec, err := decodeGuarded(mustJSON(t, &ev), DecodeRecord)
	if err != nil || rec.Event.EventID != ev.EventID {
		t.Fatalf("decodeGuarded(DecodeRecord) = %s, %v", rec.Event.EventID, err)
	}
}

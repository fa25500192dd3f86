package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/whatif"
)

// jsonLines decodes one event per line.
func jsonLines(t *testing.T, out string) []events.SelectionEvent {
	t.Helper()
	var evs []events.SelectionEvent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev events.SelectionEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func requestIDs(evs []events.SelectionEvent) []string {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.RequestID
	}
	return ids
}

func TestEventsReplay(t *testing.T) {
	ts := startSystem(t)
	before := time.Now().UTC()
	cats := []string{"code", "math", "code", "chat"}
	for i, c := range cats {
		ts.selectJSON(t, "--category", c, "--request-id", fmt.Sprintf("req-%d", i))
	}
	ts.waitEvents(t, uint64(len(cats)))
	tests := []struct {
		name    string
		args    []string
		code    int
		wantIDs []string
		stderr  []string
	}{
		{name: "last hour", args: []string{"--since", "1h"}, wantIDs: []string{"req-0", "req-1", "req-2", "req-3"}, stderr: []string{"replayed 4 events (", "4 shown"}},
		{name: "one category", args: []string{"--since", "1h", "--category", "code"}, wantIDs: []string{"req-0", "req-2"}, stderr: []string{"2 shown"}},
		{name: "a category the registry lacks", args: []string{"--since", "1h", "--category", "cooking"}, stderr: []string{`no category "cooking"`, "code", "0 shown"}},
		{
			name:   "RFC 3339 window before the decisions",
			args:   []string{"--since", before.Add(-time.Hour).Format(time.RFC3339), "--until", before.Add(-time.Minute).Format(time.RFC3339)},
			stderr: []string{"replayed 0 events (0 of"},
		},
		{name: "a window starting in the future", args: []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, code: 2, stderr: []string{"in the future"}},
		{name: "no --since", args: nil, code: 2, stderr: []string{"--since is required"}},
		{name: "bad --since", args: []string{"--since", "yesterday"}, code: 2, stderr: []string{`"yesterday"`, "RFC 3339"}},
		{name: "until before since", args: []string{"--since", "1h", "--until", "2h"}, code: 2, stderr: []string{"before --since"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.run(t, append([]string{"events", "replay", "--json"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			mustContain(t, "stderr", r.stderr, tc.stderr...)
			if tc.code != 0 {
				if strings.Contains(r.stderr, "replayed") {
					t.Fatalf("a refused window was read first: %s", r.stderr)
				}
				return
			}
			evs := jsonLines(t, r.stdout)
			if got := requestIDs(evs); !slices.Equal(got, tc.wantIDs) {
				t.Fatalf("replayed %v, want %v", got, tc.wantIDs)
			}
			for _, ev := range evs {
				if ev.Request.TaskCategory != ev.TaskCategory || len(ev.GPUs) == 0 {
					t.Fatalf("event %s lacks its inputs: request %+v, %d GPUs", ev.EventID, ev.Request, len(ev.GPUs))
				}
			}
		})
	}
	human := ts.ok(t, "events", "replay", "--since", "1h")
	mustContain(t, "replay table", human, "TIME", "CATEGORY", "MODEL", "gpu_aware")
	if n := strings.Count(human, "\n"); n != 5 {
		t.Fatalf("replay table has %d lines, want a header and 4 rows:\n%s", n, human)
	}
}

// TestEventsTail starts tail, waits until it follows the stream, then makes
// decisions: it prints the one of its category and stops after -n of them.
func TestEventsTail(t *testing.T) {
	ts := startSystem(t)
	ts.selectJSON(t, "--category", "code", "--request-id", "old") // before the tail: not shown
	// Its event is published after the reply: wait until the stream holds it,
	// or the tail (new events only) could still see it.
	eventually(t, "the old event in the stream", func() error {
		if out := ts.ok(t, "events", "replay", "--since", "1h", "--json"); !strings.Contains(out, `"old"`) {
			return fmt.Errorf("replay %q", out)
		}
		return nil
	})
	var out bytes.Buffer
	errOut := &logtest.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- Execute(testCtx(t), []string{"--nats-url", ts.url, "events", "tail", "--category", "code", "-n", "2", "--json"}, &out, errOut, noEnv)
	}()
	eventually(t, "tail follows the stream", func() error {
		if !strings.Contains(errOut.String(), "tailing") {
			return fmt.Errorf("stderr %q", errOut.String())
		}
		return nil
	})
	for i, c := range []string{"math", "code", "chat", "code"} {
		ts.selectJSON(t, "--category", c, "--request-id", fmt.Sprintf("new-%d", i))
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("tail exit %d: %s", code, errOut.String())
		}
	case <-time.After(waitLimit):
		t.Fatal("tail did not stop after 2 events")
	}
	if got := requestIDs(jsonLines(t, out.String())); !slices.Equal(got, []string{"new-1", "new-3"}) {
		t.Fatalf("tail printed %v, want [new-1 new-3]", got)
	}
}

func TestWhatif(t *testing.T) {
	ts := startSystem(t)
	for i := range 4 {
		ts.selectJSON(t, "--category", "general", "--mode", "multi_category", "--request-id", fmt.Sprint("g", i))
		ts.selectJSON(t, "--category", "math", "--request-id", fmt.Sprint("m", i))
	}
	ts.waitEvents(t, 8)
	tests := []struct {
		name     string
		spec     string
		args     []string
		code     int
		changed  int
		toModel  string
		stdout   []string
		stderrIn []string
	}{
		{name: "nothing changed", spec: `{}`, stdout: []string{"events read:                  8", "would change:  0 (0.0%)"}},
		{name: "same values as now", spec: `{"gpu_aware": true, "weights": {"general": {"TruthfulQA": 0.5}}}`, stdout: []string{"would change:  0 (0.0%)"}},
		{
			name: "TruthfulQA weighs most", spec: `{"weights": {"general": {"TruthfulQA": 5}}}`, changed: 4, toModel: "phi-3.5-mini-instruct-q4_k_m",
			stdout: []string{"weight  general/TruthfulQA -> 5", "would change:  4 (50.0%)", "general", "-> ", "phi-3.5-mini-instruct-q4_k_m", "first 4 changed event(s)"},
		},
		{name: "one category only", spec: `{"weights": {"general": {"TruthfulQA": 5}}}`, args: []string{"--category", "math"}, stdout: []string{"events read:                  4", "would change:  0"}, stderrIn: []string{"re-scored 4 of 8 events read"}},
		{name: "a category the registry lacks", spec: `{}`, args: []string{"--category", "cooking"}, stdout: []string{"events read:                  0"}, stderrIn: []string{`no category "cooking"`, "re-scored 0 of 8 events read"}},
		{name: "a spec saved with a byte order mark", spec: "\ufeff{}", stdout: []string{"would change:  0 (0.0%)"}},
		{name: "misspelt field", spec: `{"gpu_awre": false}`, code: 1, stderrIn: []string{"gpu_awre"}},
		{name: "unknown benchmark", spec: `{"weights": {"general": {"Nope": 1}}}`, code: 1, stderrIn: []string{"Nope"}},
		{name: "invalid config", spec: `{"tie_epsilon": 3}`, code: 1, stderrIn: []string{"tie_epsilon"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "whatif.json", tc.spec)
			r := ts.run(t, append([]string{"whatif", "--config", path, "--since", "1h"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			mustContain(t, "stdout", r.stdout, tc.stdout...)
			mustContain(t, "stderr", r.stderr, tc.stderrIn...)
			if tc.code != 0 {
				return
			}
			mustContain(t, "progress", r.stderr, "re-scored", "of 8 events read")
			var rep whatif.Report
			r = ts.run(t, append([]string{"whatif", "--json", "--config", path, "--since", "1h"}, tc.args...)...)
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("--json printed %q: %v", r.stdout, err)
			}
			if rep.Changed != tc.changed {
				t.Fatalf("changed %d, want %d: %+v", rep.Changed, tc.changed, rep)
			}
			for _, tr := range rep.Transitions {
				if tr.Category != "general" || tr.To != tc.toModel || !strings.HasPrefix(tr.From, "llama-3.1-70b-instruct") {
					t.Fatalf("transition %+v, want general llama-3.1-70b -> %s", tr, tc.toModel)
				}
			}
		})
	}
	if r := ts.run(t, "whatif", "--since", "1h"); r.code != 2 {
		t.Fatalf("whatif without --config: exit %d, want 2", r.code)
	}
	if r := ts.run(t, "whatif", "--config", writeFile(t, "w.json", "{}"), "--since", "1h", "--until", "2h"); r.code != 2 || !strings.Contains(r.stderr, "before --since") || strings.Contains(r.stderr, "re-scored") {
		t.Fatalf("whatif with --until before --since: exit %d, stderr %q; want 2, refused before reading", r.code, r.stderr)
	}
}

// TestGPUs shows the simulated GPUs, and marks a stale and an unhealthy one
// published by hand.
func TestGPUs(t *testing.T) {
	ts := startSystem(t)
	js := natstest.JetStream(t, ts.nc)
	publish := func(s telemetry.Sample) {
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(testCtx(t), bus.TelemetrySubject(s.Host, s.Index), data); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	publish(telemetry.Sample{Host: "old", Index: 0, Name: "NVIDIA L4", Timestamp: now.Add(-time.Minute), MemoryTotalMB: 23034, Healthy: true, Source: "nvml"})
	publish(telemetry.Sample{Host: "sick", Index: 1, Name: "NVIDIA A10", Timestamp: now, MemoryTotalMB: 23028, Source: "nvml",
		HealthReason: "Xid 79: GPU has fallen off the bus", LastXid: 79})

	var rows []gpuRow
	eventually(t, "all 8 simulated GPUs and the 2 published", func() error {
		if err := json.Unmarshal([]byte(ts.ok(t, "gpus", "--once", "--json")), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 10 {
			return fmt.Errorf("%d GPUs", len(rows))
		}
		return nil
	})
	for _, r := range rows {
		wantStale := r.Host == "old"
		if r.Stale != wantStale || (r.Host != "sick") != r.Healthy {
			t.Errorf("%s: stale %v healthy %v", r.Key(), r.Stale, r.Healthy)
		}
	}
	out := ts.ok(t, "gpus", "--once")
	mustContain(t, "gpus", out, "10 GPU(s), 1 stale, 1 unhealthy", "old/0", "STALE", "UNHEALTHY: Xid 79", "simulated", "MEMORY USED/TOTAL")
}

// An event Go decodes but cannot encode again (a "+24:00" offset) is
// skipped with a warning: it must not end a replay or a tail.
func TestEventPrinterSkipsWhatCannotBeWritten(t *testing.T) {
	var bad events.SelectionEvent
	if err := json.Unmarshal([]byte(`{"event_id":"odd","timestamp":"2025-01-01T00:00:00+24:00","task_category":"code","selected_model":"m"}`), &bad); err != nil {
		t.Fatal(err)
	}
	good := events.SelectionEvent{EventID: "fine", Timestamp: time.Now(), TaskCategory: "code", SelectedModel: "m"}
	var out, errw bytes.Buffer
	p := &eventPrinter{w: &out, errw: &errw, json: true}
	for _, ev := range []*events.SelectionEvent{&bad, &good} {
		if err := p.print(ev); err != nil {
			t.Fatalf("print %s: %v", ev.EventID, err)
		}
	}
	if evs := jsonLines(t, out.String()); len(evs) != 1 || evs[0].EventID != "fine" {
		t.Fatalf("printed %q, want only the event that can be written", out.String())
	}
	mustContain(t, "stderr", errw.String(), "skipping event odd")
}

// gpus --json without --once prints one JSON array per refresh and nothing
// else on stdout, so that a consumer can decode the stream of values.
func TestGPUsJSONStream(t *testing.T) {
	ts := startSystem(t)
	ctx, cancel := context.WithTimeout(testCtx(t), 2500*time.Millisecond)
	defer cancel()
	var out, errOut bytes.Buffer
	Execute(ctx, []string{"--nats-url", ts.url, "--json", "gpus", "--interval", "500ms"}, &out, &errOut, noEnv)
	dec := json.NewDecoder(&out)
	refreshes := 0
	for {
		var rows []gpuRow
		err := dec.Decode(&rows)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("refresh %d is not a JSON array of GPUs: %v\nstdout: %s", refreshes+1, err, out.String())
		}
		refreshes++
	}
	if refreshes < 2 {
		t.Fatalf("%d refreshes in 2.5 s at 500 ms; stderr: %s", refreshes, errOut.String())
	}
}

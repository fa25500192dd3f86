package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/allinone"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/eventlog"
)

// waitLimit bounds every wait in these tests: a safety net, not a speed assertion.
const waitLimit = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// cliCase is one command run and what it must give.
type cliCase struct {
	name string
	args []string
	code int
	// stdout and stderr must contain these.
	stdout, stderr []string
	check          func(t *testing.T, out string)
}

// runCases runs each case as a subtest, in order.
func (ts *testSystem) runCases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.run(t, c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, c.code, r.stdout, r.stderr)
			}
			mustContain(t, "stdout", r.stdout, c.stdout...)
			mustContain(t, "stderr", r.stderr, c.stderr...)
			if c.check != nil {
				c.check(t, r.stdout)
			}
		})
	}
}

// result is one command run.
type result struct {
	stdout, stderr string
	code           int
}

func noEnv(string) string { return "" }

// testSystem is a NATS server (pkg/natstest) with every service running in
// this process, as `orchestrator serve --services all` runs them.
type testSystem struct {
	url string
	db  string
	nc  *nats.Conn
}

func startSystem(t *testing.T) *testSystem {
	t.Helper()
	s, nc := natstest.Start(t)
	cfg := allinone.DefaultConfig()
	cfg.Embedded = false
	cfg.Conn = bus.ConnConfig{URL: s.ClientURL()}
	cfg.DatabaseURL = filepath.Join(t.TempDir(), "selections.db")
	cfg.GPUSource = gputelemetry.SourceSimulated
	cfg.TelemetryInterval = time.Second
	cfg.MetricsAddr = ""
	sys, err := allinone.Start(testCtx(t), cfg, func(string) zerolog.Logger { return zerolog.Nop() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Shutdown(testCtx(t)); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testSystem{url: s.ClientURL(), db: cfg.DatabaseURL, nc: nc}
}

// run executes the command line against the system.
func (ts *testSystem) run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Execute(testCtx(t), append([]string{"--nats-url", ts.url}, args...), &out, &errOut, noEnv)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// ok runs a command that must succeed and returns its stdout.
func (ts *testSystem) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := ts.run(t, args...)
	if r.code != 0 {
		t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// selectJSON runs select --json and decodes the reply.
func (ts *testSystem) selectJSON(t *testing.T, args ...string) selection.Reply {
	t.Helper()
	out := ts.ok(t, append([]string{"select", "--json"}, args...)...)
	var rep selection.Reply
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("select --json printed %q: %v", out, err)
	}
	return rep
}

// eventually retries check until it returns nil: registry changes reach
// the selectors through KV watches, and events the sink, a moment after the
// write is acknowledged. On timeout the last error says what was seen.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, waitLimit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvents waits until the selection stream holds n events.
func (ts *testSystem) waitEvents(t *testing.T, n uint64) {
	t.Helper()
	js := natstest.JetStream(t, ts.nc)
	eventually(t, "events in the stream", func() error {
		st, err := eventlog.Replay(testCtx(t), js, eventlog.Window{}, func(eventlog.Record) error { return nil }, nil)
		if err != nil {
			return err
		}
		if st.Delivered < n {
			return fmt.Errorf("%d events, want %d", st.Delivered, n)
		}
		return nil
	})
}

func mustContain(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s lacks %q:\n%s", what, p, s)
		}
	}
}

package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

var natsURLRE = regexp.MustCompile(`nats://127\.0\.0\.1:\d+`)

// serveInBackground runs `orchestrator serve args...` until the test stops
// it, and returns its stdout once the banner is printed.
func serveInBackground(t *testing.T, args ...string) (banner string, stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &logtest.Buffer{}, &logtest.Buffer{}
	done := make(chan int, 1)
	go func() { done <- Execute(ctx, append([]string{"serve"}, args...), out, errOut, noEnv) }()
	stopped := false
	stop = func() (int, string) {
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code, errOut.String()
		case <-time.After(waitLimit):
			t.Fatal("serve did not stop")
			return -1, ""
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	eventually(t, "serve prints its banner", func() error {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errOut.String())
		default:
		}
		if !strings.Contains(out.String(), "Ctrl-C stops everything") {
			return fmt.Errorf("stdout so far: %q", out.String())
		}
		return nil
	})
	return out.String(), stop
}

func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "selections.db")
	banner, stop := serveInBackground(t, "--port", "-1", "--data-dir", filepath.Join(dir, "nats"), "--db", db,
		"--gpu-source", "simulated", "--simulate", "4", "--metrics-addr", "127.0.0.1:0")
	mustContain(t, "banner", banner, "ready", "embedded, JetStream in "+filepath.Join(dir, "nats"), "SQLite "+db,
		"4 SIMULATED", "orch.select", "ORCH_SELECTIONS", "orchestrator select --category code",
		`req orch.select '{"task_category":"code"}'`, "sqlite3 "+db, "config set gpu_aware=false", "/metrics")
	url := natsURLRE.FindString(banner)
	if url == "" {
		t.Fatalf("no NATS URL in the banner:\n%s", banner)
	}
	ts := &testSystem{url: url}
	rep := ts.selectJSON(t, "--category", "code")
	if rep.Mode != selection.ModeGPUAware || rep.GPU == nil {
		t.Fatalf("serve's selection: mode %s gpu %+v", rep.Mode, rep.GPU)
	}
	code, logs := stop()
	if code != 0 || !strings.Contains(logs, "stopped cleanly") {
		t.Fatalf("serve exit %d:\n%s", code, logs)
	}
}

func TestServeJoinsNATS(t *testing.T) {
	s, _ := natstest.Start(t)
	banner, stop := serveInBackground(t, "--nats-url", s.ClientURL(), "--services", "registry,selector", "--metrics-addr", "")
	mustContain(t, "banner", banner, s.ClientURL()+" (joined)", "registry, selector", "NATS_URL="+s.ClientURL())
	if strings.Contains(banner, "SQLite") || strings.Contains(banner, "GPUs") {
		t.Fatalf("banner names services that do not run here:\n%s", banner)
	}
	ts := &testSystem{url: s.ClientURL()}
	if rep := ts.selectJSON(t, "--category", "math"); !rep.Degraded {
		t.Fatalf("without telemetry the selection should degrade: %+v", rep)
	}
	if code, logs := stop(); code != 0 {
		t.Fatalf("serve exit %d:\n%s", code, logs)
	}
}

func TestServeRefused(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown service", []string{"--services", "registry,frontend"}, "frontend"},
		{"bad port", []string{"--port", "0"}, "--port"},
		{"bad GPU source", []string{"--gpu-source", "rocm"}, "rocm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := Execute(testCtx(t), append([]string{"serve", "--data-dir", t.TempDir()}, tc.args...), &out, &errOut, noEnv)
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 mentioning %q", code, errOut.String(), tc.want)
			}
		})
	}
}

package bus_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

func TestStartEmbedded(t *testing.T) {
	s := startServer(t)
	if !s.JetStreamEnabled() {
		t.Fatal("JetStream not enabled")
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("client URL %s not on loopback", s.ClientURL())
	}
}

func TestStartEmbeddedErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	taken := l.Addr().(*net.TCPAddr).Port

	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  bus.EmbeddedConfig
		// why is a part of the message that says what went wrong.
		why string
	}{
		{"no data dir", bus.EmbeddedConfig{Port: -1}, "DataDir"},
		{"port taken", bus.EmbeddedConfig{Port: taken, DataDir: t.TempDir()}, strconv.Itoa(taken)},
		{"data dir is a file", bus.EmbeddedConfig{Port: -1, DataDir: notADir}, "JetStream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := bus.StartEmbedded(tc.cfg)
			if err == nil {
				s.Shutdown()
				t.Fatal("started")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, bus.ErrEmbeddedServer) {
				t.Fatalf("err = %v, want ErrEmbeddedServer", err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.why)
			}
		})
	}
}

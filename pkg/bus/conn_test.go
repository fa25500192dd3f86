package bus_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

func TestConnect(t *testing.T) {
	s := startServer(t)
	nop := zerolog.Nop()
	nc, err := bus.Connect(testCtx(t), bus.ConnConfig{URL: s.ClientURL(), Logger: &nop}, "unit")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Opts.Name != "unit" {
		t.Errorf("name = %q, want unit", nc.Opts.Name)
	}
	if nc.Opts.MaxReconnect != -1 {
		t.Errorf("MaxReconnect = %d, want -1 (forever)", nc.Opts.MaxReconnect)
	}
	if !nc.IsConnected() {
		t.Errorf("status = %v", nc.Status())
	}
}

func TestConnectUserPassword(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, Username: "svc", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("auth server not ready")
	}
	nop := zerolog.Nop()
	tests := []struct {
		name     string
		password string
		wantErr  error
	}{
		{"right password", "s3cret", nil},
		{"wrong password", "nope-wrong", bus.ErrConnect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := bus.ConnConfig{URL: s.ClientURL(), User: "svc", Password: tc.password, Logger: &nop}
			nc, err := bus.Connect(testCtx(t), cfg, "auth")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), tc.password) {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			nc.Close()
		})
	}
}

func TestConnectErrors(t *testing.T) {
	dir := t.TempDir()
	missingSeed := filepath.Join(dir, "missing.nk")
	badSeed := filepath.Join(dir, "bad.nk")
	if err := os.WriteFile(badSeed, []byte("not a seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := "nats://svc:hunter2@127.0.0.1:" + strconv.Itoa(freePort(t))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		cfg     bus.ConnConfig
		wantErr error
		// also, when set, must be in the chain too.
		also error
		// mention, when set, must be in the message.
		mention string
	}{
		{name: "no server", cfg: bus.ConnConfig{URL: down, ConnectTimeout: time.Second}, wantErr: bus.ErrConnect},
		{name: "cancelled context", ctx: cancelled, cfg: bus.ConnConfig{URL: down}, wantErr: bus.ErrConnect, also: context.Canceled},
		{name: "creds and nkey", cfg: bus.ConnConfig{URL: down, CredsFile: "a.creds", NKeyFile: "a.nk"}, wantErr: bus.ErrConnConfig},
		{name: "missing nkey seed", cfg: bus.ConnConfig{URL: down, NKeyFile: missingSeed}, wantErr: bus.ErrConnConfig},
		{name: "bad nkey seed", cfg: bus.ConnConfig{URL: down, NKeyFile: badSeed}, wantErr: bus.ErrConnConfig},
		{name: "cert without key", cfg: bus.ConnConfig{URL: down, TLSCert: "c.pem"}, wantErr: bus.ErrConnConfig},
		{name: "key without cert", cfg: bus.ConnConfig{URL: down, TLSKey: "k.pem"}, wantErr: bus.ErrConnConfig},
		{name: "missing creds file", cfg: bus.ConnConfig{URL: down, CredsFile: filepath.Join(dir, "none.creds")}, wantErr: bus.ErrConnConfig, mention: "NATS_CREDS"},
		{name: "missing CA file", cfg: bus.ConnConfig{URL: down, TLSCA: filepath.Join(dir, "none.pem")}, wantErr: bus.ErrConnConfig, mention: "NATS_TLS_CA"},
		{name: "missing client key", cfg: bus.ConnConfig{URL: down, TLSCert: badSeed, TLSKey: filepath.Join(dir, "none.key")}, wantErr: bus.ErrConnConfig, mention: "NATS_TLS_KEY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = testCtx(t)
			}
			nop := zerolog.Nop()
			tc.cfg.Logger = &nop
			nc, err := bus.Connect(ctx, tc.cfg, "errs")
			if nc != nil {
				nc.Close()
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.also != nil && !errors.Is(err, tc.also) {
				t.Fatalf("err = %v, want it to wrap %v", err, tc.also)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err = %v, want it to name %s", err, tc.mention)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
			if !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error does not name the URL: %v", err)
			}
		})
	}
}

// lineWriter hands each log line to a channel so a test can wait for one.
type lineWriter struct {
	mu    sync.Mutex
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.lines <- string(p):
	default: // a test that stopped reading must not block the connection
	}
	return len(p), nil
}

func TestConnectLogsDisconnect(t *testing.T) {
	dir := t.TempDir()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	w := &lineWriter{lines: make(chan string, 64)}
	lg := zerolog.New(w)
	nc, err := bus.Connect(testCtx(t), bus.ConnConfig{URL: s.ClientURL(), Logger: &lg}, "logged")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s.Shutdown()
	s.WaitForShutdown()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line := <-w.lines:
			if strings.Contains(line, "nats disconnected") {
				if !strings.Contains(line, `"nats_conn":"logged"`) {
					t.Errorf("disconnect line lacks the connection name: %s", line)
				}
				if !strings.Contains(line, s.ClientURL()) {
					t.Errorf("disconnect line does not name the server %s: %s", s.ClientURL(), line)
				}
				return
			}
		case <-deadline:
			t.Fatal("no disconnect logged")
		}
	}
}

// An empty URL (NATS_URL set to "") means NATS's default, as unset does.
func TestConnectEmptyURLIsTheDefault(t *testing.T) {
	nc, err := bus.Connect(testCtx(t), bus.ConnConfig{URL: " ", ConnectTimeout: time.Second}, "default")
	if err == nil { // something serves the default port here
		defer nc.Close()
		if !strings.Contains(nc.ConnectedUrl(), "127.0.0.1:4222") {
			t.Fatalf("connected to %s, want the default nats://127.0.0.1:4222", nc.ConnectedUrl())
		}
		return
	}
	if !errors.Is(err, bus.ErrConnect) || !strings.Contains(err.Error(), "nats://127.0.0.1:4222") {
		t.Fatalf("err = %v, want ErrConnect naming nats://127.0.0.1:4222", err)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:secret@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://tok3n@h:4222", "nats://xxxxx@h:4222"},
		{"nats://a:1@h1:4222, nats://h2:4222", "nats://a:xxxxx@h1:4222,nats://h2:4222"},
		{"tls://u:p@[::1]:4443", "tls://u:xxxxx@[::1]:4443"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := bus.RedactURL(tc.in); got != tc.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	s := startServer(t)
	nop := zerolog.Nop()
	tests := []struct {
		name       string
		closeFirst bool
	}{
		{"open connection", false},
		{"already closed", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := bus.Connect(testCtx(t), bus.ConnConfig{URL: s.ClientURL(), Logger: &nop}, "drain")
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 1)
			sub, err := nc.Subscribe("drain.test", func(m *nats.Msg) { got <- string(m.Data) })
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Publish("drain.test", []byte("last")); err != nil {
				t.Fatal(err)
			}
			if tc.closeFirst {
				nc.Close()
			}
			if err := bus.Drain(nc, 10*time.Second); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if !nc.IsClosed() {
				t.Fatal("connection not closed")
			}
			if tc.closeFirst {
				return
			}
			// Draining delivers what was in flight before closing.
			select {
			case m := <-got:
				if m != "last" {
					t.Fatalf("got %q", m)
				}
			default:
				t.Fatalf("message published before Drain was not delivered (sub valid: %v)", sub.IsValid())
			}
		})
	}
}

func TestConnected(t *testing.T) {
	s := startServer(t)
	nop := zerolog.Nop()
	nc, err := bus.Connect(testCtx(t), bus.ConnConfig{URL: s.ClientURL(), Logger: &nop}, "connected")
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Connected(nc); err != nil {
		t.Fatalf("open connection: %v", err)
	}
	nc.Close()
	if err := bus.Connected(nc); !errors.Is(err, bus.ErrDisconnected) || !strings.Contains(err.Error(), "CLOSED") {
		t.Fatalf("closed connection: %v, want ErrDisconnected naming CLOSED", err)
	}
}

package bus

import (
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedReadyTimeout bounds the wait for the in-process server to accept clients.
const embeddedReadyTimeout = 10 * time.Second

// EmbeddedConfig configures the in-process NATS server of the all-in-one
// binary and of tests.
type EmbeddedConfig struct {
	// Host is the listen address; "" means 127.0.0.1 (loopback only).
	Host string `default:"127.0.0.1"`
	// Port is the client port: -1 picks a free one, 0 means 4222.
	Port int `default:"4222"`
	// DataDir is where JetStream stores streams and buckets; required.
	DataDir string `split_words:"true"`
	// ServerName names the server in clusters and monitoring; "" lets it pick.
	ServerName string `split_words:"true"`
}

// StartEmbedded starts a NATS server with JetStream in this process and waits
// until it accepts clients. The caller shuts it down (Shutdown, then
// WaitForShutdown). Its client URL is s.ClientURL().
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: no DataDir for JetStream storage", ErrEmbeddedServer)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// The host process owns signals and logging.
		NoSigs: true,
		NoLog:  true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w on %s:%d: %w", ErrEmbeddedServer, host, cfg.Port, err)
	}
	// The server reports a failed listen or JetStream start only through its
	// logger and then never becomes ready: record those to fail fast and say why.
	rec := &fatalRecorder{}
	s.SetLoggerV2(rec, false, false, false)
	s.Start()
	fail := func(why string) (*server.Server, error) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("%w on %s:%d (data dir %q): %s", ErrEmbeddedServer, host, cfg.Port, cfg.DataDir, why)
	}
	if msg := rec.fatal(); msg != "" {
		return fail(msg)
	}
	if !s.ReadyForConnections(embeddedReadyTimeout) {
		if msg := rec.fatal(); msg != "" {
			return fail(msg)
		}
		return fail(fmt.Sprintf("not accepting connections after %s", embeddedReadyTimeout))
	}
	if !s.JetStreamEnabled() {
		return fail("JetStream is not enabled")
	}
	return s, nil
}

// fatalRecorder is a nats-server logger that keeps the first fatal message
// and drops everything else (the embedding process does its own logging).
type fatalRecorder struct {
	mu  sync.Mutex
	msg string
}

func (r *fatalRecorder) Fatalf(format string, v ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msg == "" {
		r.msg = fmt.Sprintf(format, v...)
	}
}

func (r *fatalRecorder) fatal() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msg
}

func (*fatalRecorder) Noticef(string, ...any) {}
func (*fatalRecorder) Warnf(string, ...any)   {}
func (*fatalRecorder) Errorf(string, ...any)  {}
func (*fatalRecorder) Debugf(string, ...any)  {}
func (*fatalRecorder) Tracef(string, ...any)  {}

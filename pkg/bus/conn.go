package bus

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
)

// ConnConfig holds the shared NATS settings of every service. Its envconfig
// names carry no prefix: embedded in a service Config processed with prefix
// P, envconfig reads P_NATS_URL first and falls back to NATS_URL.
type ConnConfig struct {
	// URL is one server URL or a comma-separated list (a cluster's seeds).
	URL string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	// CredsFile is a user JWT + seed file (decentralised auth).
	CredsFile string `envconfig:"NATS_CREDS"`
	// NKeyFile is a file holding a user nkey seed.
	NKeyFile string `envconfig:"NATS_NKEY"`
	User     string `envconfig:"NATS_USER"`
	Password string `envconfig:"NATS_PASSWORD"`
	Token    string `envconfig:"NATS_TOKEN"`
	// TLSCA is a PEM file of CAs the server certificate must chain to.
	TLSCA string `envconfig:"NATS_TLS_CA"`
	// TLSCert and TLSKey are the client certificate for mutual TLS; both or neither.
	TLSCert string `envconfig:"NATS_TLS_CERT"`
	TLSKey  string `envconfig:"NATS_TLS_KEY"`
	// ConnectTimeout bounds the dial and handshake with one server.
	ConnectTimeout time.Duration `envconfig:"NATS_CONNECT_TIMEOUT" default:"5s"`
	// Logger receives disconnect, reconnect and async errors; nil means
	// zerolog's global logger.
	Logger *zerolog.Logger `ignored:"true" json:"-"`
}

// Connection tuning: reconnect forever (a service outlives NATS restarts) and
// buffer what is published while disconnected instead of failing at once.
const (
	reconnectWait      = 1 * time.Second
	reconnectJitter    = 500 * time.Millisecond
	reconnectJitterTLS = 1 * time.Second
	reconnectBufSize   = 16 << 20
	pingInterval       = 20 * time.Second
	maxPingsOut        = 3
	defaultDialTimeout = 5 * time.Second
)

// Connect dials NATS with the settings of cfg; name is the connection name
// servers show (e.g. "selector"). opts are applied last, so they can override
// anything set here. The connection reconnects forever; the error of a failed
// first connect names the URL (without its password) and wraps ErrConnect, or
// ErrConnConfig for settings that cannot work. An empty URL is NATS's
// default, nats://127.0.0.1:4222, as an unset NATS_URL is.
func Connect(ctx context.Context, cfg ConnConfig, name string, opts ...nats.Option) (*nats.Conn, error) {
	if strings.TrimSpace(cfg.URL) == "" { // NATS_URL set but empty: envconfig keeps ""
		cfg.URL = nats.DefaultURL
	}
	where := RedactURL(cfg.URL)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrConnect, where, err)
	}
	base, err := connOptions(cfg, name)
	if err != nil {
		return nil, fmt.Errorf("%w for %s: %w", ErrConnConfig, where, err)
	}
	base = append(base, opts...)

	type result struct {
		nc  *nats.Conn
		err error
	}
	// nats.Connect takes no context: dial in the background and let ctx win.
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(cfg.URL, base...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrConnect, where, r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("%w %s: %w", ErrConnect, where, ctx.Err())
	}
}

func connOptions(cfg ConnConfig, name string) ([]nats.Option, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = &log.Logger
	}
	lg := logger.With().Str("nats_conn", name).Logger()
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitterTLS),
		nats.ReconnectBufSize(reconnectBufSize),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // a deliberate Close or Drain; ClosedHandler logs it
			}
			// The connection no longer knows its server: name the ones it tries.
			ev := lg.Warn().Str("url", RedactURL(cfg.URL))
			if err != nil {
				ev = ev.Err(err)
			}
			ev.Msg("nats disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			lg.Info().Str("url", RedactURL(nc.ConnectedUrl())).
				Uint64("reconnects", nc.Stats().Reconnects).Msg("nats reconnected")
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			ev := lg.Info()
			if err := nc.LastError(); err != nil {
				ev = lg.Warn().Err(err)
			}
			ev.Msg("nats connection closed")
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			lg.Warn().Str("url", RedactURL(nc.ConnectedUrl())).Msg("nats server entering lame duck mode")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := lg.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}

	if cfg.CredsFile != "" && cfg.NKeyFile != "" {
		return nil, fmt.Errorf("NATS_CREDS and NATS_NKEY are both set; use one")
	}
	// nats.go reads these files only when it dials, and its error does not
	// say which setting named the file.
	for _, f := range []struct{ name, path string }{
		{"NATS_CREDS", cfg.CredsFile}, {"NATS_TLS_CA", cfg.TLSCA}, {"NATS_TLS_CERT", cfg.TLSCert}, {"NATS_TLS_KEY", cfg.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY %q: %w", cfg.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, fmt.Errorf("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts, nil
}

// drainPoll is how often Drain looks whether the connection has closed.
const drainPoll = 10 * time.Millisecond

// Connected is nil while nc is up, else an error wrapping ErrDisconnected
// that says its state: the services' readiness checks use it.
func Connected(nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w (%s)", ErrDisconnected, nc.Status())
}

// Drain lets nc deliver what its subscriptions hold and flush what was
// published, then close; past timeout it closes nc anyway. Services call it
// on shutdown so that no reply or sample is lost.
func Drain(nc *nats.Conn, timeout time.Duration) error {
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("%w: %w", ErrDrain, err)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for !nc.IsClosed() {
		select {
		case <-deadline.C:
			nc.Close()
			return fmt.Errorf("%w: not closed after %s", ErrDrain, timeout)
		case <-poll.C:
		}
	}
	return nil
}

// RedactURL returns a server URL (or comma-separated list) fit for logs and
// errors: passwords and tokens in the user-info part are masked.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			if err != nil && strings.Contains(p, "@") {
				p = "<unparsable url>"
			}
			parts[i] = p
			continue
		}
		if _, hasPass := u.User.Password(); hasPass {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			// A lone user-info part is a token.
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// Package selector is the selector service: it answers selection requests
// on orch.select from snapshots of the registry (KV watchers) and of GPU
// telemetry (the telemetry stream), so that no NATS round trip sits on the
// request path, and publishes one decision event per selection.
package selector

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
)

// Config is read from the environment with prefix SELECTOR_ (the NATS
// settings also without it: NATS_URL, NATS_CREDS, ...).
type Config struct {
	// Instance names this replica in events and logs; default host-pid.
	Instance string `envconfig:"INSTANCE"`
	// MaxRequestBytes refuses larger requests with 400.
	MaxRequestBytes int `envconfig:"MAX_REQUEST_BYTES" default:"65536"`
	// Workers is how many requests are answered in parallel (default: the
	// number of CPUs).
	Workers int `envconfig:"WORKERS"`
	// EventBuffer bounds the decision events waiting to be published; when it
	// is full, events are dropped and counted rather than delaying replies.
	EventBuffer int `envconfig:"EVENT_BUFFER" default:"16384"`
	// EventRetries is how often a failed event publish is retried.
	EventRetries int `envconfig:"EVENT_RETRIES" default:"5"`
	// EventPack is the most events packed into one stream message when
	// several wait (events.MaxPerMessage at most). 1 sends each on its own,
	// for consumers older than packing (upgrade the sinks and CLIs first).
	EventPack int `envconfig:"EVENT_PACK" default:"256"`
	// FleetRebuildInterval bounds how often telemetry changes recompile the
	// GPU view (samples arrive every few seconds per GPU).
	FleetRebuildInterval time.Duration `envconfig:"FLEET_REBUILD_INTERVAL" default:"100ms"`
	// CatalogDebounce waits for a burst of registry writes (an import) to
	// settle before the engine is rebuilt.
	CatalogDebounce time.Duration `envconfig:"CATALOG_DEBOUNCE" default:"50ms"`
	// WarmupTimeout bounds reading the buckets and the telemetry stream at start.
	WarmupTimeout time.Duration `envconfig:"WARMUP_TIMEOUT" default:"30s"`
	// ShareReservations publishes this replica's GPU memory reservations to
	// the others and applies theirs.
	ShareReservations bool `envconfig:"SHARE_RESERVATIONS" default:"true"`
	// MetricsAddr serves /metrics, /healthz and /readyz (cmd/selector only).
	MetricsAddr string `envconfig:"METRICS_ADDR" default:":9102"`
	// DrainTimeout bounds flushing buffered events at shutdown.
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"10s"`

	bus.ConnConfig
}

// Bounds of Config's counts: beyond them a selector would only exhaust its
// memory (a buffered event is 2-3 KB) or the server's subscriptions (one
// endpoint per worker).
const (
	MaxWorkers     = 1024
	MaxEventBuffer = 1 << 20
)

// Validate returns an error wrapping ErrConfig that names every setting
// that cannot work. New calls it; the binary calls it first, so that a bad
// SELECTOR_* variable is reported before anything connects.
func (c *Config) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if c.Workers < 0 || c.Workers > MaxWorkers {
		bad("SELECTOR_WORKERS %d is outside 0..%d (0: one per CPU)", c.Workers, MaxWorkers)
	}
	if c.MaxRequestBytes <= 0 {
		bad("SELECTOR_MAX_REQUEST_BYTES %d must be positive", c.MaxRequestBytes)
	}
	if c.EventBuffer <= 0 || c.EventBuffer > MaxEventBuffer {
		bad("SELECTOR_EVENT_BUFFER %d is outside 1..%d", c.EventBuffer, MaxEventBuffer)
	}
	if c.EventPack < 1 || c.EventPack > events.MaxPerMessage {
		bad("SELECTOR_EVENT_PACK %d is outside 1..%d", c.EventPack, events.MaxPerMessage)
	}
	switch {
	case c.EventRetries < 0:
		bad("SELECTOR_EVENT_RETRIES %d must not be negative", c.EventRetries)
	case eventRetrySpan(c.EventRetries) > bus.SelectionDedupWindow:
		bad("SELECTOR_EVENT_RETRIES %d would retry an event for up to %s, beyond the decision stream's %s dedup window (a retry could store an event twice)",
			c.EventRetries, eventRetrySpan(c.EventRetries), bus.SelectionDedupWindow)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"SELECTOR_FLEET_REBUILD_INTERVAL", c.FleetRebuildInterval},
		{"SELECTOR_WARMUP_TIMEOUT", c.WarmupTimeout},
		{"SELECTOR_DRAIN_TIMEOUT", c.DrainTimeout},
	} {
		if d.v <= 0 {
			bad("%s %s must be positive", d.name, d.v)
		}
	}
	if c.CatalogDebounce < 0 {
		bad("SELECTOR_CATALOG_DEBOUNCE %s must not be negative", c.CatalogDebounce)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// DefaultConfig is the configuration envconfig produces with no variables set.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes: 65536, EventBuffer: 16384, EventRetries: 5, EventPack: events.MaxPerMessage, MetricsAddr: ":9102",
		FleetRebuildInterval: 100 * time.Millisecond, CatalogDebounce: 50 * time.Millisecond,
		WarmupTimeout: 30 * time.Second, ShareReservations: true, DrainTimeout: 10 * time.Second,
	}
}

func defaultInstance() string {
	host, err := os.Hostname()
	if err != nil {
		host = "selector"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

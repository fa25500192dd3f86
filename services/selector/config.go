// Package selector is the selector service: it answers selection requests
// on orch.select from snapshots of the registry (KV watchers) and of GPU
// telemetry (the telemetry stream), so that no NATS round trip sits on the
// request path, and publishes one decision event per selection.
package selector

import (
	"fmt"
	"os"
	"strconv"
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

func (c *Config) validate() error {
	switch {
	case c.Workers < 0:
		return fmt.Errorf("%w: SELECTOR_WORKERS %d must not be negative", ErrConfig, c.Workers)
	case c.MaxRequestBytes <= 0:
		return fmt.Errorf("%w: SELECTOR_MAX_REQUEST_BYTES %d must be positive", ErrConfig, c.MaxRequestBytes)
	case c.EventBuffer <= 0:
		return fmt.Errorf("%w: SELECTOR_EVENT_BUFFER %d must be positive", ErrConfig, c.EventBuffer)
	case c.EventPack < 1 || c.EventPack > events.MaxPerMessage:
		return fmt.Errorf("%w: SELECTOR_EVENT_PACK %d is outside 1..%d", ErrConfig, c.EventPack, events.MaxPerMessage)
	case c.EventRetries < 0:
		return fmt.Errorf("%w: SELECTOR_EVENT_RETRIES %d must not be negative", ErrConfig, c.EventRetries)
	case eventRetrySpan(c.EventRetries) > bus.SelectionDedupWindow:
		return fmt.Errorf("%w: SELECTOR_EVENT_RETRIES %d would retry an event for up to %s, beyond the decision stream's %s dedup window (a retry could store an event twice)",
			ErrConfig, c.EventRetries, eventRetrySpan(c.EventRetries), bus.SelectionDedupWindow)
	case c.FleetRebuildInterval <= 0 || c.CatalogDebounce < 0 || c.WarmupTimeout <= 0 || c.DrainTimeout <= 0:
		return fmt.Errorf("%w: SELECTOR_FLEET_REBUILD_INTERVAL, SELECTOR_WARMUP_TIMEOUT and SELECTOR_DRAIN_TIMEOUT must be positive, SELECTOR_CATALOG_DEBOUNCE not negative", ErrConfig)
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

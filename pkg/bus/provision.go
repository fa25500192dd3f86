package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retention and history defaults of the provisioned streams and buckets.
const (
	// TelemetryHistory is how many samples per GPU subject the telemetry stream keeps.
	TelemetryHistory = 16
	// TelemetryMaxAge drops samples nobody would call fresh any more.
	TelemetryMaxAge = 10 * time.Minute
	// SelectionDedupWindow is how long the stream remembers a Nats-Msg-Id
	// (event id): long enough to cover a selector's retries of one event
	// (the selector's config is checked against it), and no longer, because
	// the server keeps every id of the window in memory, about 150-160
	// bytes each (bench-nats -heapprofile). At 70k events/s a 2-minute window
	// would hold 8M ids, some 1.4 GB the garbage collector scans.
	SelectionDedupWindow = 30 * time.Second
	// DefaultSelectionMaxAge keeps decision events for 30 days.
	DefaultSelectionMaxAge = 30 * 24 * time.Hour
	// RegistryHistory is the number of revisions kept per registry key.
	RegistryHistory = 16
)

// maxReplicas is JetStream's limit on stream replicas.
const maxReplicas = 5

type provisionOptions struct {
	// replicas is 0 unless WithReplicas was given.
	replicas        int
	replicasSet     bool
	selectionMaxAge time.Duration
	asyncEvents     bool
}

// ProvisionOption tunes Provision.
type ProvisionOption func(*provisionOptions)

// WithReplicas sets the replica count of every stream and bucket (3 in a
// cluster). Without it, existing streams keep theirs and new ones get 1.
// n must be 1..5.
func WithReplicas(n int) ProvisionOption {
	return func(o *provisionOptions) { o.replicas, o.replicasSet = n, true }
}

// WithSelectionMaxAge sets how long decision events are kept (default 30 days).
func WithSelectionMaxAge(d time.Duration) ProvisionOption {
	return func(o *provisionOptions) { o.selectionMaxAge = d }
}

// WithAsyncEventPersist creates a new SelectionStream in NATS's async
// persist mode: the server acknowledges an event before its file write and
// writes many events at once, not each on its own; the write follows within
// about 15 ms (NATS's flush loop). Meant for a server in the same process as
// the selectors (serve's embedded one): a crash there already loses what the
// selectors hold unacknowledged (a batch is committed within half a second),
// and this adds at most those last milliseconds of acknowledged events. A
// failed write (a full disk) also loses them without an error to the
// publisher; the events after it are refused and counted as failed. With
// batches it takes a fifth off the event path's CPU (BenchmarkEventPublisher)
// and the stream's loop no longer waits on a write per event. An existing
// stream keeps its mode (NATS cannot change it), and a replicated stream has
// none (NATS writes those in batches already).
func WithAsyncEventPersist() ProvisionOption {
	return func(o *provisionOptions) { o.asyncEvents = true }
}

// Provision creates or updates the orchestrator's streams (TelemetryStream,
// SelectionStream) and KV buckets (ModelsBucket, CategoriesBucket,
// ConfigBucket). Running it again is harmless: existing
// data is kept and settings are brought to the ones given.
func Provision(ctx context.Context, js jetstream.JetStream, opts ...ProvisionOption) error {
	o := provisionOptions{selectionMaxAge: DefaultSelectionMaxAge}
	for _, opt := range opts {
		opt(&o)
	}
	if o.replicasSet && (o.replicas < 1 || o.replicas > maxReplicas) {
		return fmt.Errorf("%w: replicas %d, want 1..%d", ErrProvision, o.replicas, maxReplicas)
	}
	if o.selectionMaxAge <= 0 {
		return fmt.Errorf("%w: selection max age %s, want > 0", ErrProvision, o.selectionMaxAge)
	}

	streams := []jetstream.StreamConfig{
		{
			Name:              TelemetryStream,
			Description:       "recent GPU samples; a starting selector reads the last per subject",
			Subjects:          []string{TelemetryStreamSubjects},
			MaxMsgsPerSubject: TelemetryHistory,
			MaxAge:            TelemetryMaxAge,
			Storage:           jetstream.FileStorage,
		},
		{
			Name:        SelectionStream,
			Description: "selection decision events",
			Subjects:    []string{SelectionEventWildcard},
			Duplicates:  SelectionDedupWindow,
			MaxAge:      o.selectionMaxAge,
			Storage:     jetstream.FileStorage,
			// The selector publishes its events as fast-ingest batches
			// (NATS 2.14+): acknowledged every few hundred, not one by one.
			AllowBatchPublish: true,
		},
	}
	// Look every stream and bucket up first, so that a failed lookup changes
	// nothing.
	for i := range streams {
		cfg := &streams[i]
		cur, err := currentConfig(ctx, js, cfg.Name)
		if err != nil {
			return err
		}
		cfg.Replicas = o.replicasFor(cur)
		switch {
		case cur != nil: // NATS cannot change it: keep what the stream was made with
			cfg.PersistMode = cur.PersistMode
		case cfg.Name == SelectionStream && o.asyncEvents && cfg.Replicas == 1:
			cfg.PersistMode = jetstream.AsyncPersistMode
		}
		if cfg.Name == SelectionStream && cfg.PersistMode == jetstream.AsyncPersistMode && cfg.Replicas > 1 {
			return fmt.Errorf("%w: stream %s was made in async persist mode (serve's embedded server), which NATS cannot replicate: move its events to a new stream to scale it to %d replicas", ErrProvision, cfg.Name, cfg.Replicas)
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: ModelsBucket, Description: "model registry", History: RegistryHistory},
		{Bucket: CategoriesBucket, Description: "task categories and benchmark weights", History: RegistryHistory},
		{Bucket: ConfigBucket, Description: "live selection config", History: RegistryHistory},
	}
	for i := range buckets {
		cfg := &buckets[i]
		cfg.Storage = jetstream.FileStorage
		cur, err := currentConfig(ctx, js, "KV_"+cfg.Bucket)
		if err != nil {
			return err
		}
		cfg.Replicas = o.replicasFor(cur)
	}

	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("%w: stream %s: %w", ErrProvision, cfg.Name, err)
		}
	}
	for _, cfg := range buckets {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("%w: bucket %s: %w", ErrProvision, cfg.Bucket, err)
		}
	}
	return nil
}

// currentConfig is the config of the stream called name, nil when there is
// none.
func currentConfig(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamConfig, error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: look up stream %s: %w", ErrProvision, name, err)
	}
	return &st.CachedInfo().Config, nil
}

// replicasFor is the replica count to provision a stream with: the one
// asked for, else the stream's current count cur (so that a service
// provisioning with defaults never scales an R3 cluster's streams down),
// else 1.
func (o *provisionOptions) replicasFor(cur *jetstream.StreamConfig) int {
	if o.replicasSet {
		return o.replicas
	}
	if cur != nil && cur.Replicas > 0 {
		return cur.Replicas
	}
	return 1
}

package bus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	lister := js.StreamNames(testCtx(t))
	var names []string
	for n := range lister.Name() {
		names = append(names, n)
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func TestProvisionCreatesExactlyTheContract(t *testing.T) {
	js := jetStream(t, startServer(t))
	ctx := testCtx(t)
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"KV_" + bus.CategoriesBucket, "KV_" + bus.ConfigBucket, "KV_" + bus.ModelsBucket,
		bus.SelectionStream, bus.TelemetryStream,
	}
	slices.Sort(want)
	if got := streamNames(t, js); !slices.Equal(got, want) {
		t.Fatalf("streams = %v, want %v", got, want)
	}

	streams := []struct {
		name        string
		subjects    []string
		perSubject  int64
		maxAge      time.Duration
		duplicates  time.Duration
		checkDupWin bool
	}{
		{bus.TelemetryStream, []string{"orch.telemetry.>"}, 16, 10 * time.Minute, 0, false},
		{bus.SelectionStream, []string{bus.SelectionEventWildcard}, -1, 30 * 24 * time.Hour, 30 * time.Second, true},
	}
	for _, tc := range streams {
		t.Run("stream "+tc.name, func(t *testing.T) {
			st, err := js.Stream(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if !slices.Equal(cfg.Subjects, tc.subjects) {
				t.Errorf("subjects = %v, want %v", cfg.Subjects, tc.subjects)
			}
			if cfg.MaxMsgsPerSubject != tc.perSubject {
				t.Errorf("MaxMsgsPerSubject = %d, want %d", cfg.MaxMsgsPerSubject, tc.perSubject)
			}
			if cfg.MaxAge != tc.maxAge {
				t.Errorf("MaxAge = %s, want %s", cfg.MaxAge, tc.maxAge)
			}
			if tc.checkDupWin && cfg.Duplicates != tc.duplicates {
				t.Errorf("Duplicates = %s, want %s", cfg.Duplicates, tc.duplicates)
			}
			if cfg.Storage != jetstream.FileStorage {
				t.Errorf("storage = %s, want file", cfg.Storage)
			}
			if cfg.Replicas != 1 {
				t.Errorf("replicas = %d, want 1", cfg.Replicas)
			}
		})
	}

	buckets := []struct {
		name    string
		history int64
		ttl     time.Duration
	}{
		{bus.ModelsBucket, 16, 0},
		{bus.CategoriesBucket, 16, 0},
		{bus.ConfigBucket, 16, 0},
	}
	for _, tc := range buckets {
		t.Run("bucket "+tc.name, func(t *testing.T) {
			kv, err := js.KeyValue(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.History() != tc.history {
				t.Errorf("history = %d, want %d", st.History(), tc.history)
			}
			if st.TTL() != tc.ttl {
				t.Errorf("TTL = %s, want %s", st.TTL(), tc.ttl)
			}
		})
	}
}

func TestProvisionIsIdempotent(t *testing.T) {
	js := jetStream(t, startServer(t))
	ctx := testCtx(t)
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	before := streamNames(t, js)

	// Data written between runs must survive a second Provision.
	kv, err := js.KeyValue(ctx, bus.ModelsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "llama-3-8b", `{"id":"llama-3-8b"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, bus.SelectionEventSubject("code"), []byte(`{}`), jetstream.WithMsgID("ev-1")); err != nil {
		t.Fatal(err)
	}

	if err := bus.Provision(ctx, js); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if after := streamNames(t, js); !slices.Equal(after, before) {
		t.Fatalf("streams changed: %v -> %v", before, after)
	}
	e, err := kv.Get(ctx, "llama-3-8b")
	if err != nil {
		t.Fatalf("model lost by second provision: %v", err)
	}
	if string(e.Value()) != `{"id":"llama-3-8b"}` {
		t.Fatalf("model value = %s", e.Value())
	}
	st, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("selection stream has %d messages after second provision, want 1", info.State.Msgs)
	}
	// The dedup window is in force: the same event id is not stored twice.
	ack, err := js.Publish(ctx, bus.SelectionEventSubject("code"), []byte(`{}`), jetstream.WithMsgID("ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Fatal("republished event id was not detected as a duplicate")
	}
}

func TestProvisionUpdatesSelectionMaxAge(t *testing.T) {
	js := jetStream(t, startServer(t))
	ctx := testCtx(t)
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js, bus.WithSelectionMaxAge(7*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != 7*24*time.Hour {
		t.Fatalf("MaxAge = %s, want 168h", got)
	}
}

func TestProvisionErrors(t *testing.T) {
	tests := []struct {
		name string
		opts []bus.ProvisionOption
		// pre runs before Provision to set up a conflict.
		pre func(t *testing.T, js jetstream.JetStream)
	}{
		{name: "zero replicas", opts: []bus.ProvisionOption{bus.WithReplicas(0)}},
		{name: "too many replicas", opts: []bus.ProvisionOption{bus.WithReplicas(6)}},
		{name: "R3 on a single server", opts: []bus.ProvisionOption{bus.WithReplicas(3)}},
		{name: "zero selection max age", opts: []bus.ProvisionOption{bus.WithSelectionMaxAge(0)}},
		{
			name: "subjects taken by another stream",
			pre: func(t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateStream(testCtx(t), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"orch.events.>"}}); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jetStream(t, startServer(t))
			if tc.pre != nil {
				tc.pre(t, js)
			}
			err := bus.Provision(testCtx(t), js, tc.opts...)
			if !errors.Is(err, bus.ErrProvision) {
				t.Fatalf("err = %v, want ErrProvision", err)
			}
		})
	}
}

// A service provisioning with defaults must not scale a stream down.
func TestProvisionKeepsExistingReplicas(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc := c.Connect(t)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Async event persist does not apply to replicated streams.
	if err := bus.Provision(ctx, js, bus.WithReplicas(3), bus.WithAsyncEventPersist()); err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bus.SelectionStream, bus.TelemetryStream, "KV_" + bus.ModelsBucket} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas after a default Provision, want 3", name, r)
		}
		if m := st.CachedInfo().Config.PersistMode; m != jetstream.DefaultPersistMode {
			t.Errorf("%s persist mode %v on 3 replicas, want default", name, m)
		}
	}

	// A stream made async on one replica cannot be scaled: the error says why.
	if err := js.DeleteStream(ctx, bus.SelectionStream); err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js, bus.WithReplicas(1), bus.WithAsyncEventPersist()); err != nil {
		t.Fatal(err)
	}
	err := bus.Provision(ctx, js, bus.WithReplicas(3))
	if !errors.Is(err, bus.ErrProvision) || !strings.Contains(err.Error(), "async persist") {
		t.Fatalf("scaling an async stream: err = %v, want ErrProvision naming async persist", err)
	}
}

// A stream's persist mode cannot change: one made in async mode by hand
// (with the nats CLI) keeps it, and Provision still updates the rest.
func TestProvisionKeepsPersistMode(t *testing.T) {
	js := jetStream(t, startServer(t))
	ctx := testCtx(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: bus.TelemetryStream, Subjects: []string{bus.TelemetryStreamSubjects}, Storage: jetstream.FileStorage,
		PersistMode: jetstream.AsyncPersistMode,
	}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.PersistMode != jetstream.AsyncPersistMode || cfg.MaxMsgsPerSubject != bus.TelemetryHistory {
		t.Fatalf("persist mode %v, history %d; want async kept and %d applied", cfg.PersistMode, cfg.MaxMsgsPerSubject, bus.TelemetryHistory)
	}
}

// Async event persist applies to a new selection stream only, and what a
// stream was made with stays: NATS cannot change it.
func TestProvisionEventPersistMode(t *testing.T) {
	async := []bus.ProvisionOption{bus.WithAsyncEventPersist()}
	tests := []struct {
		name        string
		first, then []bus.ProvisionOption
		want        jetstream.PersistModeType
	}{
		{name: "default", want: jetstream.DefaultPersistMode},
		{name: "async on a new stream", first: async, want: jetstream.AsyncPersistMode},
		{name: "an async stream stays async", first: async, then: []bus.ProvisionOption{}, want: jetstream.AsyncPersistMode},
		{name: "a default stream stays default", then: async, want: jetstream.DefaultPersistMode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jetStream(t, startServer(t))
			ctx := testCtx(t)
			if err := bus.Provision(ctx, js, tc.first...); err != nil {
				t.Fatal(err)
			}
			if tc.then != nil {
				if err := bus.Provision(ctx, js, tc.then...); err != nil {
					t.Fatalf("second Provision: %v", err)
				}
			}
			for _, name := range []string{bus.SelectionStream, bus.TelemetryStream} {
				st, err := js.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				want := jetstream.DefaultPersistMode
				if name == bus.SelectionStream {
					want = tc.want
				}
				if m := st.CachedInfo().Config.PersistMode; m != want {
					t.Errorf("%s persist mode %v, want %v", name, m, want)
				}
			}
		})
	}
}

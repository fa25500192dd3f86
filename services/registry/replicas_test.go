package registry

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

// A registry started with the default config on a cluster whose streams
// and buckets are R3 provisions without scaling them down.
func TestProvisionKeepsAClustersReplicas(t *testing.T) {
	c := natstest.StartCluster(t, 3) // provisioned R3
	svc, err := New(Config{Provision: true}, c.Connect(t), WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("registry not ready after 30s")
	}
	js := natstest.JetStream(t, c.Connect(t))
	for _, name := range []string{bus.SelectionStream, bus.TelemetryStream, "KV_" + bus.ModelsBucket, "KV_" + bus.ConfigBucket} {
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas after the registry provisioned, want 3", name, r)
		}
	}
}

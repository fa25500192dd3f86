// Package natstest starts embedded JetStream for tests: one server (Start)
// or an in-process cluster (StartCluster); loopback, random ports, storage
// in t.TempDir(), streams and buckets provisioned.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// setupTimeout bounds connecting and provisioning against the local server.
const setupTimeout = 30 * time.Second

// Start runs a provisioned JetStream server for the test and returns it with
// one connection. Both are closed when the test ends.
func Start(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	// TempDir first: cleanups run last-in first-out, so the server stops
	// before its directory is removed.
	dir := t.TempDir()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: -1, DataDir: dir})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	nc := Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := bus.Provision(ctx, JetStream(t, nc)); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return s, nc
}

// Connect opens another connection to s, closed when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	// Connection events are not logged: async callbacks may fire after the
	// test has finished, when t.Log would panic.
	nop := zerolog.Nop()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), Logger: &nop}, "natstest-"+t.Name())
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns the JetStream API on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream on %s: %v", nc.ConnectedUrl(), err)
	}
	return js
}

package natstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

func TestStartProvisionsAndConnects(t *testing.T) {
	s, nc := natstest.Start(t)
	if !nc.IsConnected() {
		t.Fatalf("conn not connected: %v", nc.Status())
	}
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, name := range []string{bus.TelemetryStream, bus.SelectionStream} {
		t.Run("stream "+name, func(t *testing.T) {
			if _, err := js.Stream(ctx, name); err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
		})
	}
	for _, name := range []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket} {
		t.Run("bucket "+name, func(t *testing.T) {
			if _, err := js.KeyValue(ctx, name); err != nil {
				t.Fatalf("bucket %s: %v", name, err)
			}
		})
	}

	t.Run("second connection sees the first one's messages", func(t *testing.T) {
		other := natstest.Connect(t, s)
		sub, err := other.SubscribeSync("natstest.ping")
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("natstest.ping", []byte("x")); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no message on second connection: %v", err)
		}
		if string(msg.Data) != "x" {
			t.Fatalf("got %q, want x", msg.Data)
		}
	})
}

func TestServersAreIsolated(t *testing.T) {
	_, nc1 := natstest.Start(t)
	_, nc2 := natstest.Start(t)
	if nc1.ConnectedUrl() == nc2.ConnectedUrl() {
		t.Fatalf("both servers on %s", nc1.ConnectedUrl())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv1, err := natstest.JetStream(t, nc1).KeyValue(ctx, bus.ModelsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv1.PutString(ctx, "m", "v"); err != nil {
		t.Fatal(err)
	}
	kv2, err := natstest.JetStream(t, nc2).KeyValue(ctx, bus.ModelsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv2.Get(ctx, "m"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("second server sees the first one's key: err = %v", err)
	}
}

func TestCleanupClosesConnAndServer(t *testing.T) {
	var (
		srvRunning func() bool
		connClosed func() bool
	)
	t.Run("inner", func(t *testing.T) {
		s, nc := natstest.Start(t)
		srvRunning = s.Running
		connClosed = nc.IsClosed
	})
	if !connClosed() {
		t.Error("connection still open after the test ended")
	}
	if srvRunning() {
		t.Error("server still running after the test ended")
	}
}

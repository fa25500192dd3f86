package natstest_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

func TestStartClusterProvisionsR3AndSurvivesALeader(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	if got := len(strings.Split(c.URLs(), ",")); got != 3 {
		t.Fatalf("URLs %q: %d URLs, want 3", c.URLs(), got)
	}
	for i, s := range c.Servers {
		if want := "n" + string(rune('1'+i)); s.Name() != want {
			t.Errorf("node %d is named %q, want %q", i, s.Name(), want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := natstest.JetStream(t, c.Connect(t))

	streams := []string{bus.TelemetryStream, bus.SelectionStream}
	for _, b := range []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket} {
		streams = append(streams, "KV_"+b)
	}
	for _, name := range streams {
		t.Run("replicas of "+name, func(t *testing.T) {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if r := s.CachedInfo().Config.Replicas; r != 3 {
				t.Fatalf("%s has %d replicas, want 3", name, r)
			}
		})
	}

	// Each client enters through a different node, so losing the leader
	// costs one of them its server.
	pubs := make([]jetstream.JetStream, len(c.Servers))
	for i := range c.Servers {
		pubs[i] = natstest.JetStream(t, c.ConnectVia(t, i))
		if got := pubs[i].Conn().ConnectedServerName(); got != c.Servers[i].Name() {
			t.Fatalf("ConnectVia(%d) reached %s", i, got)
		}
	}
	// Each attempt has its own bound: a publish whose ack went down with the
	// old leader would otherwise wait out the whole test. Retries carry the
	// same message id, so the stream stores each message once.
	publish := func(js jetstream.JetStream, id string) error {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := js.Publish(actx, bus.SelectionEventSubject("code"), []byte(id), jetstream.WithMsgID(id))
		return err
	}
	if err := publish(pubs[0], "before"); err != nil {
		t.Fatal(err)
	}

	old := c.StreamLeader(t, bus.SelectionStream)
	c.Stop(old)
	if c.Servers[old].Running() {
		t.Fatalf("node %d still running after Stop", old)
	}
	next := c.StreamLeader(t, bus.SelectionStream)
	if next == old {
		t.Fatalf("stopped node %d still leads %s", old, bus.SelectionStream)
	}
	// Every client, the stopped node's included, stores through the new leader.
	for i, p := range pubs {
		id := "after-" + string(rune('0'+i))
		for {
			err := publish(p, id)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("client %d cannot publish after losing node %d: %v", i, old, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("stream holds %d messages, want 4 (one before, one per client after)", info.State.Msgs)
	}
	if info.Cluster == nil || info.Cluster.Leader != c.Servers[next].Name() {
		t.Fatalf("stream info names leader %+v, want %s", info.Cluster, c.Servers[next].Name())
	}
}

func TestStartClusterNeedsTwoNodes(t *testing.T) {
	ft := &fatalT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		natstest.StartCluster(ft, 1)
	}()
	<-done
	if !ft.failed {
		t.Fatal("StartCluster(1) did not fail")
	}
}

// fatalT records a Fatalf instead of failing the real test; Fatalf ends the
// goroutine as testing.T's does.
type fatalT struct {
	testing.TB
	failed bool
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// ClusterName is the NATS cluster name StartCluster gives its nodes.
const ClusterName = "orch-test"

// clusterFormTimeout bounds the wait for routes, a JetStream meta leader and
// stream leaders: generous, since elections take seconds on a loaded machine.
const clusterFormTimeout = 60 * time.Second

// clusterPoll is how often the cluster helpers look at the servers' state.
const clusterPoll = 25 * time.Millisecond

// Cluster is an in-process JetStream cluster: node i is Servers[i], named
// "n<i+1>". Stopped nodes stay in Servers (not running).
type Cluster struct {
	Servers []*server.Server
	logs    []*errorLog
}

// StartCluster runs an n-node JetStream cluster on loopback (random client
// and route ports, storage in t.TempDir()), waits until it has formed and
// elected a meta leader, and provisions every stream and bucket with n
// replicas. The nodes are shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 2 {
		// One node listing itself as a route would wait for a second peer forever.
		t.Fatalf("natstest: cluster of %d nodes; use Start for one", n)
	}
	ports := freePorts(t, n)
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", fmt.Sprint(p))}
	}
	c := &Cluster{}
	for i := range n {
		// TempDir first: cleanups run last-in first-out, so the node stops
		// before its directory is removed.
		dir := t.TempDir()
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   dir,
			Cluster:    server.ClusterOpts{Name: ClusterName, Host: "127.0.0.1", Port: ports[i]},
			// Every node lists every node, itself included, as a production
			// config does: the meta group then expects n peers from the start.
			Routes: routes,
			NoSigs: true,
			NoLog:  true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: node %s: %v", opts.ServerName, err)
		}
		log := &errorLog{}
		s.SetLoggerV2(log, false, false, false)
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		s.Start()
		if !s.ReadyForConnections(setupTimeout) {
			t.Fatalf("natstest: node %s not accepting clients after %s: %s", opts.ServerName, setupTimeout, log)
		}
		c.Servers = append(c.Servers, s)
		c.logs = append(c.logs, log)
	}
	c.waitFormed(t)

	nc := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), clusterFormTimeout)
	defer cancel()
	if err := bus.Provision(ctx, JetStream(t, nc), bus.WithReplicas(n)); err != nil {
		t.Fatalf("natstest: provision at R%d: %v", n, err)
	}
	return c
}

// freePorts returns n distinct loopback ports that were free a moment ago
// (routes must name every node's port before any node starts).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// waitFormed waits until one node leads the JetStream meta group, sees all
// the others as peers, and every node is current with it.
func (c *Cluster) waitFormed(t testing.TB) {
	t.Helper()
	n := len(c.Servers)
	c.poll(t, "the cluster to form", func() bool {
		leader := c.MetaLeader()
		if leader < 0 || len(c.Servers[leader].JetStreamClusterPeers()) != n {
			return false
		}
		for _, s := range c.Servers {
			if !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
}

// URLs is every node's client URL, comma-separated (stopped nodes included:
// a client skips them).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Connect opens a connection that knows every node, so it reconnects to a
// surviving one; it is closed when the test ends. opts go to bus.Connect.
func (c *Cluster) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return connectURL(t, c.URLs(), opts...)
}

// ConnectVia is Connect with node i tried first, so a test decides which
// clients lose their server when it stops a node.
func (c *Cluster) ConnectVia(t testing.TB, i int) *nats.Conn {
	t.Helper()
	urls := []string{c.Servers[i].ClientURL()}
	for j, s := range c.Servers {
		if j != i {
			urls = append(urls, s.ClientURL())
		}
	}
	return connectURL(t, strings.Join(urls, ","), nats.DontRandomize())
}

func connectURL(t testing.TB, urls string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	// Connection events are not logged: async callbacks may fire after the
	// test has finished, when t.Log would panic.
	nop := zerolog.Nop()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: urls, Logger: &nop}, "natstest-"+t.Name(), opts...)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// MetaLeader is the index of the running node leading the JetStream
// meta group, or -1 while there is none.
func (c *Cluster) MetaLeader() int {
	for i, s := range c.Servers {
		if s.Running() && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader waits until a running node leads stream (global account) and
// returns its index.
func (c *Cluster) StreamLeader(t testing.TB, stream string) int {
	t.Helper()
	leader := -1
	c.poll(t, "a leader of stream "+stream, func() bool {
		for i, s := range c.Servers {
			if s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// Stop shuts node i down without handing its leaderships over first, as a
// crash would, and waits until it has stopped.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

func (c *Cluster) poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(clusterFormTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			var logs []string
			for i, l := range c.logs {
				logs = append(logs, fmt.Sprintf("n%d: %s", i+1, l))
			}
			t.Fatalf("natstest: no %s after %s; server errors: %s", what, clusterFormTimeout, strings.Join(logs, "; "))
		}
		time.Sleep(clusterPoll)
	}
}

// errorLog is a nats-server logger keeping the last errors of one node, so a
// cluster that does not form says why.
type errorLog struct {
	mu   sync.Mutex
	last []string
}

// errorLogKeep is how many error lines errorLog remembers.
const errorLogKeep = 5

func (l *errorLog) keep(format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = append(l.last, fmt.Sprintf(format, v...))
	if len(l.last) > errorLogKeep {
		l.last = l.last[1:]
	}
}

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.last) == 0 {
		return "none"
	}
	return strings.Join(l.last, " | ")
}

func (l *errorLog) Fatalf(format string, v ...any) { l.keep(format, v) }
func (l *errorLog) Errorf(format string, v ...any) { l.keep(format, v) }
func (*errorLog) Noticef(string, ...any)           {}
func (*errorLog) Warnf(string, ...any)             {}
func (*errorLog) Debugf(string, ...any)            {}
func (*errorLog) Tracef(string, ...any)            {}

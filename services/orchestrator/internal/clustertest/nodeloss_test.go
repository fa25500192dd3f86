package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/client"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
	"github.com/nlocalmodels/orchestrator/services/registry"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

const (
	nodes = 3
	// answerBound is the "answered again within seconds": the first
	// selection sent after the node is down must be answered within it.
	answerBound = 10 * time.Second
	// waitLimit bounds every other wait (warm-up, flushes, the sink); it is a
	// safety net for a loaded machine, not a claim on speed.
	waitLimit = 40 * time.Second
	poll      = 20 * time.Millisecond

	// Each placement reserves its model's memory until the GPU's next
	// sample: the fleet and the sampling rate set how many selections a
	// second can be placed rather than refused with 422.
	sampleInterval = 250 * time.Millisecond
	simGPUs        = "8xA100-SXM4-80GB"
	gpuCount       = 8

	selectTimeout = 500 * time.Millisecond
	loadWorkers   = 2
	// loadPause paces each worker (at most 50 selections a second each),
	// so that the run stays light on a shared 2-core machine.
	loadPause = 20 * time.Millisecond
	// warmSuccesses are wanted before the node is stopped, servedAfter from
	// each selector replica after it.
	warmSuccesses = 50
	servedAfter   = 10
	// stormWorkers send selections without pause while the node is
	// stopped, once stormSuccesses of theirs have been answered.
	stormWorkers   = 8
	stormSuccesses = 20
)

var categories = []string{"code", "math", "reasoning", "general", "chat", "multilingual"}

// TestNodeLossKeepsSelectionsAndEvents stops the node leading the decision
// stream while selections flow, and checks that selections are answered
// again within answerBound and that every decision event reaches the sink
// exactly once.
func TestNodeLossKeepsSelectionsAndEvents(t *testing.T) {
	logs := &logtest.Buffer{}
	// Registered first, so it runs last: after every service has stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs:\n%s", logs)
		}
	})
	logger := zerolog.New(logs).Level(zerolog.InfoLevel).With().Timestamp().Logger()

	c := natstest.StartCluster(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	js := natstest.JetStream(t, c.Connect(t))

	// The victim is the node leading the decision stream. The load client,
	// one selector, the sink and the telemetry agent enter through it, so
	// they all lose their server; the other selector and the registry do not.
	victim := c.StreamLeader(t, bus.SelectionStream)
	other := (victim + 1) % nodes

	reg, err := registry.New(registry.Config{Provision: true, Replicas: nodes}, c.ConnectVia(t, other),
		registry.WithSeedData(exampledata.Registry, exampledata.Categories), registry.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	start(t, "registry", reg.Run).await(t, reg.Ready())

	agent, err := gputelemetry.New(gputelemetry.Config{
		Host: "gpu-host-a", Interval: sampleInterval, ReadTimeout: sampleInterval / 2,
		Source: gputelemetry.SourceSimulated, SimGpus: []string{simGPUs},
	}, c.ConnectVia(t, victim), gputelemetry.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	start(t, "gpu-telemetry", agent.Run)
	waitFor(t, "a sample of every GPU in "+bus.TelemetryStream, waitLimit, func() (bool, string) {
		info, err := streamInfo(ctx, js, bus.TelemetryStream)
		if err != nil {
			return false, err.Error()
		}
		return info.State.NumSubjects >= gpuCount, fmt.Sprintf("%d subjects", info.State.NumSubjects)
	})

	sels := []*selector.Service{
		startSelector(t, "selector-a", c.ConnectVia(t, victim), logger),
		startSelector(t, "selector-b", c.ConnectVia(t, other), logger),
	}

	store, err := metricssink.OpenSQLite(ctx, filepath.Join(t.TempDir(), "selections.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sink, err := metricssink.New(metricssink.Config{
		// StartCluster provisioned at R3; the sink's Provision would apply R1.
		Provision: false,
		BatchWait: 100 * time.Millisecond,
		// Messages whose delivery died with the node come back after AckWait.
		AckWait:     5 * time.Second,
		RetryMax:    time.Second,
		LagInterval: time.Second,
	}, natstest.JetStream(t, c.ConnectVia(t, victim)), store, metricssink.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	start(t, "metrics-sink", sink.Run)

	// Checked with every service started: none may have provisioned its own
	// replica count over the cluster's.
	t.Run("streams and buckets at R3", func(t *testing.T) {
		for _, name := range provisionedStreams() {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			if r := s.CachedInfo().Config.Replicas; r != nodes {
				t.Errorf("stream %s has %d replicas, want %d", name, r, nodes)
			}
		}
	})

	l := newLoad()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var workers sync.WaitGroup
	cl := client.New(c.ConnectVia(t, victim), client.WithTimeout(selectTimeout))
	for w := range loadWorkers {
		workers.Go(func() { l.run(loadCtx, cl, w) })
	}
	var storm *sync.WaitGroup
	stopWorkers := func() {
		stopLoad()
		workers.Wait()
		if storm != nil {
			storm.Wait()
		}
	}
	defer stopWorkers() // on an early Fatal

	waitFor(t, fmt.Sprintf("%d selections before the node loss", warmSuccesses), waitLimit, func() (bool, string) {
		st := l.snapshot()
		return st.ok >= warmSuccesses, st.String()
	})

	// A storm of selections keeps decision events in flight to the leader
	// all the while it goes down: some of their acks are lost with it.
	before := l.snapshot()
	stormOver := make(chan struct{})
	storm = l.storm(loadCtx, cl, stormWorkers, stormOver)
	waitFor(t, "the storm to be answered", waitLimit, func() (bool, string) {
		st := l.snapshot()
		return st.ok >= before.ok+stormSuccesses, st.String()
	})

	// Leadership may have moved while the services started: stop whoever
	// leads the decision stream now.
	if now := c.StreamLeader(t, bus.SelectionStream); now != victim {
		t.Logf("leadership of %s moved from n%d to n%d before the stop; stopping n%d", bus.SelectionStream, victim+1, now+1, now+1)
		victim = now
	}
	t.Logf("stopping n%d (leader of %s; meta leader n%d) after %s", victim+1, bus.SelectionStream, c.MetaLeader()+1, l.snapshot())
	stopAt := time.Now()
	c.Stop(victim)
	close(stormOver)
	downAt := time.Now()
	l.markDown(downAt)
	servedBefore := make([]uint64, len(sels))
	for i, s := range sels {
		servedBefore[i] = s.Stats().Selections
	}
	newLeader := c.StreamLeader(t, bus.SelectionStream)
	electedIn := time.Since(stopAt)

	waitFor(t, "a selection sent after the node loss to be answered", answerBound, func() (bool, string) {
		st := l.snapshot()
		return !st.firstOKAfterDown.IsZero(), st.String()
	})
	gap := l.snapshot().firstOKAfterDown.Sub(stopAt)

	// Keep the load on until both replicas, the reconnected one included,
	// have served again.
	waitFor(t, "both selectors to serve after the node loss", waitLimit, func() (bool, string) {
		done := true
		for i, s := range sels {
			done = done && s.Stats().Selections-servedBefore[i] >= servedAfter
		}
		return done, "served " + servedSince(sels, servedBefore)
	})
	stopWorkers()
	final := l.snapshot()

	// Every decision a selector answered is published (or counted as failed
	// or dropped) before the counts are compared.
	var selections uint64
	for i, s := range sels {
		waitFor(t, fmt.Sprintf("selector %d to settle its events", i), waitLimit, func() (bool, string) {
			st := s.Stats()
			return st.EventsPublished+st.EventsFailed+st.EventsDropped == st.Selections, fmt.Sprintf("%+v", st)
		})
		st := s.Stats()
		selections += st.Selections
		t.Logf("selector %d: %d selections, %d events published, %d publish retries, %d failed, %d dropped",
			i, st.Selections, st.EventsPublished, st.EventsRetried, st.EventsFailed, st.EventsDropped)
		if st.EventsFailed != 0 || st.EventsDropped != 0 {
			t.Errorf("selector %d lost decision events: %d failed, %d dropped (%d retries)", i, st.EventsFailed, st.EventsDropped, st.EventsRetried)
		}
	}

	t.Logf("n%d stopped in %s; new %s leader n%d after %s; first selection answered %s after the stop (longest stretch without an answer: %s)",
		victim+1, downAt.Sub(stopAt).Round(time.Millisecond), bus.SelectionStream, newLeader+1,
		electedIn.Round(time.Millisecond), gap.Round(time.Millisecond), final.longestGap.Round(time.Millisecond))
	t.Logf("load: %s; selections served after the stop: %s", final, servedSince(sels, servedBefore))

	streamIDs := streamEventIDs(t, ctx, js)

	t.Run("the stream holds each decision once", func(t *testing.T) {
		ids := streamIDs
		if uint64(len(ids)) != selections {
			t.Errorf("stream holds %d distinct events, the selectors answered %d selections", len(ids), selections)
		}
		for id, n := range ids {
			if n != 1 {
				t.Errorf("event %s is in the stream %d times", id, n)
			}
		}
		for id := range final.replied {
			if ids[id] == 0 {
				t.Errorf("replied event %s is not in the stream", id)
			}
		}
	})

	t.Run("the sink stores each decision once", func(t *testing.T) {
		waitFor(t, "the sink to store every decision", waitLimit, func() (bool, string) {
			n, err := store.Count(ctx)
			if err != nil {
				return false, err.Error()
			}
			return uint64(n) >= selections, fmt.Sprintf("%d rows of %d, sink %+v", n, selections, sink.Stats())
		})
		stored := storedEventIDs(t, ctx, store)
		if uint64(len(stored)) != selections {
			t.Errorf("table holds %d events, the selectors answered %d selections", len(stored), selections)
		}
		for id := range streamIDs {
			if !stored[id] {
				t.Errorf("event %s of the stream is not in selection_metrics", id)
			}
		}
		for id := range final.replied {
			if !stored[id] {
				t.Errorf("replied event %s is not in selection_metrics", id)
			}
		}
		dups := duplicateEventIDs(t, ctx, store)
		if len(dups) > 0 {
			t.Errorf("event ids stored more than once: %v", dups)
		}
		st := sink.Stats()
		t.Logf("sink: %d inserted, %d redeliveries skipped, %d fetch errors, %d store errors, %d poison",
			st.Inserted, st.Duplicates, st.FetchErrors, st.StoreErrors, st.Poison)
		if st.Poison != 0 {
			t.Errorf("sink terminated %d events as poison", st.Poison)
		}
	})
}

// provisionedStreams are the streams behind bus.Provision's streams and buckets.
func provisionedStreams() []string {
	names := []string{bus.TelemetryStream, bus.SelectionStream}
	for _, b := range []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket} {
		names = append(names, "KV_"+b)
	}
	return names
}

// servedSince lists how many selections each selector served since before.
func servedSince(sels []*selector.Service, before []uint64) string {
	served := make([]string, len(sels))
	for i, s := range sels {
		served[i] = fmt.Sprint(s.Stats().Selections - before[i])
	}
	return strings.Join(served, ", ")
}

func startSelector(t *testing.T, name string, nc *nats.Conn, logger zerolog.Logger) *selector.Service {
	t.Helper()
	cfg := selector.DefaultConfig()
	cfg.Instance = name
	cfg.WarmupTimeout = waitLimit
	s, err := selector.New(cfg, nc, selector.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	start(t, name, s.Run).await(t, s.Ready())
	waitFor(t, name+" to see every GPU", waitLimit, func() (bool, string) {
		st := s.Stats()
		return st.GPUs >= gpuCount, fmt.Sprintf("%+v", st)
	})
	return s
}

// service is a Run in its own goroutine, stopped when the test ends.
type service struct {
	name   string
	exited chan struct{}
	err    error
}

func start(t *testing.T, name string, run func(context.Context) error) *service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{name: name, exited: make(chan struct{})}
	go func() {
		defer close(s.exited)
		s.err = run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.exited
		if s.err != nil {
			t.Errorf("%s: Run: %v", name, s.err)
		}
	})
	return s
}

func (s *service) await(t *testing.T, ready <-chan struct{}) {
	t.Helper()
	select {
	case <-ready:
	case <-s.exited:
		t.Fatalf("%s stopped before it was ready: %v", s.name, s.err)
	case <-time.After(waitLimit):
		t.Fatalf("%s not ready after %s", s.name, waitLimit)
	}
}

// waitFor polls cond until it holds, failing the test with cond's last
// status after limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s: %s", what, limit, status)
		}
		time.Sleep(poll)
	}
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// streamEventIDs counts the decision events in the stream by event id.
func streamEventIDs(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]int {
	t.Helper()
	// Just after the node loss the JetStream API can answer "no responders"
	// for a moment (seen in CI on a loaded 2-core machine): retry.
	var (
		info *jetstream.StreamInfo
		cons jetstream.Consumer
	)
	waitFor(t, "an ordered consumer on "+bus.SelectionStream, waitLimit, func() (bool, string) {
		var err error
		if info, err = streamInfo(ctx, js, bus.SelectionStream); err != nil {
			return false, "stream info: " + err.Error()
		}
		if cons, err = js.OrderedConsumer(ctx, bus.SelectionStream, jetstream.OrderedConsumerConfig{}); err != nil {
			return false, "ordered consumer: " + err.Error()
		}
		return true, ""
	})
	ids := map[string]int{}
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := cons.Fetch(int(min(1000, info.State.Msgs-read)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			first := true
			for data := range events.Each(m.Data()) {
				var ev events.SelectionEvent
				if err := json.Unmarshal(data, &ev); err != nil {
					t.Fatalf("stream message %s: %v", m.Subject(), err)
				}
				// A message's id is its first event's.
				if h := m.Headers().Get(jetstream.MsgIDHeader); first && h != ev.EventID {
					t.Errorf("message of event %s published with Nats-Msg-Id %q", ev.EventID, h)
				}
				first = false
				ids[ev.EventID]++
			}
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("read %d of %d stream messages, then nothing", read, info.State.Msgs)
		}
		read += uint64(got)
	}
	return ids
}

func storedEventIDs(t *testing.T, ctx context.Context, store *metricssink.SQLiteStore) map[string]bool {
	t.Helper()
	rows, err := store.DB().QueryContext(ctx, `SELECT event_id FROM selection_metrics`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func duplicateEventIDs(t *testing.T, ctx context.Context, store *metricssink.SQLiteStore) []string {
	t.Helper()
	rows, err := store.DB().QueryContext(ctx,
		`SELECT event_id, COUNT(*) FROM selection_metrics GROUP BY event_id HAVING COUNT(*) > 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var dups []string
	for rows.Next() {
		var (
			id string
			n  int
		)
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		dups = append(dups, fmt.Sprintf("%s x%d", id, n))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return dups
}

// load sends selections from several workers and records what came back.
type load struct {
	mu sync.Mutex
	st loadStats
}

type loadStats struct {
	ok, failed, degraded int
	errs                 map[string]int
	// replied counts the replies carrying each event id.
	replied map[string]int
	// down is when the node was down; firstOKAfterDown is when the first
	// selection sent after it was answered.
	down, firstOKAfterDown time.Time
	lastOK                 time.Time
	longestGap             time.Duration
}

func newLoad() *load {
	return &load{st: loadStats{errs: map[string]int{}, replied: map[string]int{}}}
}

func (l *load) run(ctx context.Context, cl *client.Client, worker int) {
	for i := 0; ctx.Err() == nil; i++ {
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, selectTimeout)
		rep, err := cl.Select(rctx, selection.Request{
			RequestID: fmt.Sprintf("w%d-%d", worker, i), TaskCategory: categories[i%len(categories)],
		})
		cancel()
		if ctx.Err() != nil {
			return // the load was stopped: this request proves nothing
		}
		l.record(sent, time.Now(), rep, err)
		select {
		case <-ctx.Done():
		case <-time.After(loadPause):
		}
	}
}

// storm sends multi_category selections (no GPU, so never refused for
// lack of memory) from n goroutines without pause until over is closed.
func (l *load) storm(ctx context.Context, cl *client.Client, n int, over <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-over:
					return
				case <-ctx.Done():
					return
				default:
				}
				sent := time.Now()
				rctx, cancel := context.WithTimeout(ctx, selectTimeout)
				rep, err := cl.Select(rctx, selection.Request{
					RequestID: fmt.Sprintf("storm%d-%d", w, i), TaskCategory: categories[i%len(categories)],
					Mode: selection.ModeMultiCategory,
				})
				cancel()
				if ctx.Err() != nil {
					return
				}
				l.record(sent, time.Now(), rep, err)
			}
		})
	}
	return &wg
}

func (l *load) record(sent, done time.Time, rep *selection.Reply, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.st
	if err != nil {
		st.failed++
		st.errs[errorKind(err)]++
		return
	}
	st.ok++
	st.replied[rep.EventID]++
	if rep.Degraded {
		st.degraded++
	}
	if !st.lastOK.IsZero() {
		st.longestGap = max(st.longestGap, done.Sub(st.lastOK))
	}
	st.lastOK = done
	if !st.down.IsZero() && !sent.Before(st.down) && st.firstOKAfterDown.IsZero() {
		st.firstOKAfterDown = done
	}
}

func (l *load) markDown(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.down = at
}

func (l *load) snapshot() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.errs = maps.Clone(l.st.errs)
	st.replied = maps.Clone(l.st.replied)
	return st
}

func (st loadStats) String() string {
	kinds := slices.Sorted(maps.Keys(st.errs))
	var errs []string
	for _, k := range kinds {
		errs = append(errs, fmt.Sprintf("%s: %d", k, st.errs[k]))
	}
	return fmt.Sprintf("%d answered (%d degraded), %d failed {%s}", st.ok, st.degraded, st.failed, strings.Join(errs, ", "))
}

// errorKind names a client error for the counts.
func errorKind(err error) string {
	var se *client.ServiceError
	switch {
	case errors.As(err, &se):
		return "code " + se.Code
	case errors.Is(err, client.ErrTimeout):
		return "timeout"
	case errors.Is(err, client.ErrNoSelector):
		return "no selector"
	default:
		return err.Error()
	}
}

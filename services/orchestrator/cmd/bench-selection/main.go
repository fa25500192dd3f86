// Command bench-selection measures selections through NATS against a bare
// NATS echo responder under the same set-up: one process, an embedded
// JetStream server, the registry seeded with the example data, simulated GPU
// samples, the selector (decision events on) and the metrics-sink writing
// SQLite. For each number of requests in flight it reports requests/s and
// p50/p99 latency of both, then how fast the sink ingested the events and
// the largest consumer lag it saw, then the last level once more with the
// sinks consuming (the backlog they leave, the events dropped, and what the
// selector reaches then). Run it with scripts/bench-nats.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
	"github.com/nlocalmodels/orchestrator/services/registry"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

const (
	echoSubject = "bench.echo"
	// wireSubject answers like the selector, minus the selection: a
	// recorded reply, and a recorded event published to wireStream.
	wireSubject = "bench.wire"
	wireStream  = "BENCH_WIRE"
)

type options struct {
	duration       time.Duration
	inflight       []int
	gpus           int
	reservationTTL time.Duration
	// eventPersist is the decision stream's persist mode: async, as serve's
	// embedded server makes it, or default (one write per event).
	eventPersist string
	cpuProfile   string
	mutexProfile string
	heapProfile  string
	sinkProfile  string
	sinkDatabase string
	sinks        int
	sinkDiscard  bool
}

// sinkOnPostgres tells that -sink-database names PostgreSQL (as
// metricssink.OpenStore reads it: a postgres:// or postgresql:// URL).
func (o options) sinkOnPostgres() bool {
	return strings.HasPrefix(strings.ToLower(o.sinkDatabase), "postgres")
}

func main() {
	var o options
	var levels string
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "how long each measurement runs")
	flag.StringVar(&levels, "inflight", "1,8,64", "comma-separated numbers of requests in flight")
	flag.IntVar(&o.gpus, "gpus", 64, "simulated GPUs (8 per host)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the last level's select phase to this file")
	flag.StringVar(&o.mutexProfile, "mutexprofile", "", "write a mutex contention profile of the last level's select phase to this file")
	flag.StringVar(&o.heapProfile, "heapprofile", "", "write the live heap after the last level's select phase to this file")
	flag.StringVar(&o.sinkProfile, "sink-cpuprofile", "", "write a CPU profile of the sink draining the backlog to this file")
	flag.StringVar(&o.sinkDatabase, "sink-database", "", "the sink's database URL (postgres://...); default a SQLite file in the run's temporary directory")
	flag.IntVar(&o.sinks, "sinks", 1, "metrics-sink instances sharing the durable consumer (more than one needs PostgreSQL or -sink-discard: SQLite has one writer)")
	flag.BoolVar(&o.sinkDiscard, "sink-discard", false, "the sinks drop each batch instead of storing it (a diagnostic: what NATS delivery and decoding allow without a database)")
	flag.DurationVar(&o.reservationTTL, "reservation-ttl", 0, "GPU memory reservation TTL; 0 keeps the simulated fleet from filling up, so every request is a full gpu_aware selection")
	flag.StringVar(&o.eventPersist, "event-persist", "async", "decision stream persist mode: async (as serve's embedded server makes it) or default (one file write per event, as a separate NATS server)")
	flag.Parse()
	if o.eventPersist != "async" && o.eventPersist != "default" {
		fmt.Fprintf(os.Stderr, "bench-selection: -event-persist %q: want async or default\n", o.eventPersist)
		os.Exit(2)
	}
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench-selection: -inflight %q: want positive integers\n", levels)
			os.Exit(2)
		}
		o.inflight = append(o.inflight, n)
	}
	if o.sinks < 1 || (o.sinks > 1 && !o.sinkOnPostgres() && !o.sinkDiscard) {
		fmt.Fprintf(os.Stderr, "bench-selection: -sinks %d: want 1, or more with a -sink-database postgres://... or -sink-discard (SQLite has one writer)\n", o.sinks)
		os.Exit(2)
	}
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-selection:", err)
		os.Exit(1)
	}
}

// system is everything the benchmark starts, in one process.
type system struct {
	url      string
	selector *selector.Service
	// startSink starts a metrics-sink (after the load: see run).
	startSink func() (*metricssink.Service, error)
	stop      func()
}

func start(ctx context.Context, o options, dir string) (*system, error) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: -1, DataDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	url := srv.ClientURL()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var conns []*nats.Conn
	sys := &system{url: url}
	sys.stop = func() {
		cancel()
		wg.Wait()
		for _, nc := range conns {
			nc.Close()
		}
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	fail := func(err error) (*system, error) {
		sys.stop()
		return nil, err
	}
	nop := zerolog.Nop()
	connect := func(name string) (*nats.Conn, error) {
		nc, err := bus.Connect(ctx, bus.ConnConfig{URL: url, Logger: &nop}, name)
		if err == nil {
			conns = append(conns, nc)
		}
		return nc, err
	}
	goRun := func(what string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "bench-selection: %s: %v\n", what, err)
			}
		}()
	}

	nc, err := connect("bench-admin")
	if err != nil {
		return fail(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	var provision []bus.ProvisionOption
	if o.eventPersist == "async" {
		provision = append(provision, bus.WithAsyncEventPersist())
	}
	if err := bus.Provision(ctx, js, provision...); err != nil {
		return fail(err)
	}

	regConn, err := connect("registry")
	if err != nil {
		return fail(err)
	}
	reg, err := registry.New(registry.Config{}, regConn, registry.WithSeedData(exampledata.Registry, exampledata.Categories))
	if err != nil {
		return fail(err)
	}
	goRun("registry", reg.Run)
	if err := waitReady(ctx, reg.Ready()); err != nil {
		return fail(fmt.Errorf("registry: %w", err))
	}
	cfg := selection.DefaultConfig()
	cfg.ReservationTTLMs = o.reservationTTL.Milliseconds()
	if err := putConfig(ctx, js, cfg); err != nil {
		return fail(err)
	}

	if err := publishSamples(ctx, js, o.gpus); err != nil {
		return fail(err)
	}
	goRun("telemetry", func(ctx context.Context) error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := publishSamples(ctx, js, o.gpus); err != nil && ctx.Err() == nil {
					return err
				}
			}
		}
	})

	selConn, err := connect("selector")
	if err != nil {
		return fail(err)
	}
	selEvents, err := connect("selector-events")
	if err != nil {
		return fail(err)
	}
	sys.selector, err = selector.New(selector.DefaultConfig(), selConn, selector.WithEventConn(selEvents))
	if err != nil {
		return fail(err)
	}
	goRun("selector", sys.selector.Run)
	if err := waitReady(ctx, sys.selector.Ready()); err != nil {
		return fail(fmt.Errorf("selector: %w", err))
	}

	echoConn, err := connect("echo")
	if err != nil {
		return fail(err)
	}
	if _, err := micro.AddService(echoConn, micro.Config{Name: "echo", Version: "1.0.0", QueueGroup: "echo",
		Endpoint: &micro.EndpointConfig{Subject: echoSubject, Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	}); err != nil {
		return fail(err)
	}
	sys.startSink = func() (*metricssink.Service, error) {
		db := o.sinkDatabase
		if db == "" {
			db = filepath.Join(dir, "selections.db")
		}
		store, err := metricssink.OpenStore(ctx, db)
		if err != nil {
			return nil, err
		}
		if o.sinkDiscard {
			store = discardStore{store}
		}
		sinkConn, err := connect("metrics-sink")
		if err != nil {
			return nil, err
		}
		sinkJS, err := jetstream.New(sinkConn)
		if err != nil {
			return nil, err
		}
		sink, err := metricssink.New(metricssink.Config{LagInterval: 100 * time.Millisecond, RateWindow: time.Second}, sinkJS, store, metricssink.WithLogger(nop))
		if err != nil {
			return nil, err
		}
		goRun("metrics-sink", func(ctx context.Context) error {
			defer store.Close()
			return sink.Run(ctx)
		})
		return sink, nil
	}
	return sys, nil
}

func waitReady(ctx context.Context, ready <-chan struct{}) error {
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("not ready after 30s")
	}
}

func putConfig(ctx context.Context, js jetstream.JetStream, cfg selection.Config) error {
	kv, err := js.KeyValue(ctx, bus.ConfigBucket)
	if err != nil {
		return err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, bus.SelectionConfigKey, data)
	return err
}

// publishSamples sends one fresh sample per simulated GPU.
func publishSamples(ctx context.Context, js jetstream.JetStream, gpus int) error {
	now := time.Now().UTC()
	for i := range gpus {
		total := []int64{81920, 46068, 24564}[i%3]
		used := int64(rand.Float64() * 0.5 * float64(total))
		s := telemetry.Sample{
			Host: fmt.Sprintf("bench-%03d", i/8), Index: i % 8, UUID: fmt.Sprintf("GPU-bench-%05d", i), Name: "simulated",
			Timestamp: now, Source: "simulated", MemoryTotalMB: total, MemoryUsedMB: used, MemoryFreeMB: total - used,
			UtilizationGPUPct: float64(rand.IntN(100)), TemperatureC: float64(35 + rand.IntN(40)), PowerW: 150, PowerLimitW: 400, Healthy: true,
		}
		data, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if _, err := js.Publish(ctx, bus.TelemetrySubject(s.Host, s.Index), data); err != nil {
			return err
		}
	}
	return nil
}

// result is one load level against one subject.
type result struct {
	requests, failures int
	elapsed            time.Duration
	p50, p99           time.Duration
	// cpu is the process's CPU time during the load (cpuKnown false where
	// the platform does not say).
	cpu      time.Duration
	cpuKnown bool
}

func (r result) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// cpuPerRequest is the CPU time the whole process spent per answered request.
func (r result) cpuPerRequest() string {
	if !r.cpuKnown || r.requests == 0 {
		return "n/a"
	}
	return us(r.cpu / time.Duration(r.requests))
}

// coresBusy is how many cores' worth of CPU the process used during the load.
func (r result) coresBusy() string {
	if !r.cpuKnown {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r.cpu.Seconds()/r.elapsed.Seconds())
}

// load keeps inflight requests outstanding on one connection for d.
func load(nc *nats.Conn, subject string, bodies [][]byte, inflight int, d time.Duration) result {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  atomic.Int64
		wg        sync.WaitGroup
	)
	cpuStart, cpuKnown := processCPU()
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := w; time.Now().Before(deadline); i += inflight {
				t := time.Now()
				msg, err := nc.Request(subject, bodies[i%len(bodies)], 5*time.Second)
				if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
					failures.Add(1)
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := result{requests: len(latencies), failures: int(failures.Load()), elapsed: time.Since(start)}
	if cpuEnd, ok := processCPU(); ok && cpuKnown {
		res.cpu, res.cpuKnown = cpuEnd-cpuStart, true
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		res.p50 = latencies[len(latencies)/2]
		res.p99 = latencies[len(latencies)*99/100]
	}
	return res
}

func run(ctx context.Context, o options, out io.Writer) error {
	dir, err := os.MkdirTemp("", "bench-selection-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sys, err := start(ctx, o, dir)
	if err != nil {
		return err
	}
	defer sys.stop()

	client, err := nats.Connect(sys.url, nats.Name("bench-client"))
	if err != nil {
		return err
	}
	defer client.Close()
	var bodies [][]byte
	for _, c := range []string{"code", "math", "reasoning", "general", "chat", "multilingual"} {
		b, _ := json.Marshal(selection.Request{TaskCategory: c})
		bodies = append(bodies, b)
	}

	// Warm the paths (connections, caches) before measuring.
	load(client, echoSubject, bodies, 8, 300*time.Millisecond)
	load(client, bus.SelectSubject, bodies, 8, 300*time.Millisecond)
	wr, err := startWire(ctx, sys.url, client)
	if err != nil {
		return err
	}
	defer wr.stop()
	load(client, wireSubject, bodies, 8, 300*time.Millisecond)
	wr.settle()
	settleSelector(sys.selector)

	fmt.Fprintf(out, "GPUs: %d simulated; each level runs %s; decision events on, stream persist mode %s; reservation TTL %s\n", o.gpus, o.duration, o.eventPersist, o.reservationTTL)
	fmt.Fprint(out, "wire: a responder that sends a recorded selection reply and publishes a recorded decision event (same sizes, same way), without selecting\n\n")
	fmt.Fprintln(out, "| in flight | echo req/s | echo p50 | echo p99 | wire req/s | select req/s | select p50 | select p99 | select/echo | select/wire | select errors | events dropped |")
	fmt.Fprintln(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	best := 0.0
	type level struct{ echo, wire, sel result }
	var levels []level
	for i, n := range o.inflight {
		echo := load(client, echoSubject, bodies, n, o.duration)
		wire := load(client, wireSubject, bodies, n, o.duration)
		wr.settle()
		last := i == len(o.inflight)-1
		if last {
			if err := startProfile(o.cpuProfile); err != nil {
				return err
			}
			if o.mutexProfile != "" {
				runtime.SetMutexProfileFraction(10)
			}
		}
		droppedBefore := sys.selector.Stats().EventsDropped
		sel := load(client, bus.SelectSubject, bodies, n, o.duration)
		// The next level starts once the selector has handed on every event.
		settleSelector(sys.selector)
		if last {
			pprof.StopCPUProfile()
			if err := writeProfile("mutex", o.mutexProfile); err != nil {
				return err
			}
			runtime.SetMutexProfileFraction(0)
			if o.heapProfile != "" {
				runtime.GC() // the profile shows what is live, not what awaits collection
				if err := writeProfile("heap", o.heapProfile); err != nil {
					return err
				}
			}
		}
		best = max(best, sel.rate())
		levels = append(levels, level{echo, wire, sel})
		fmt.Fprintf(out, "| %d | %.0f | %s | %s | %.0f | %.0f | %s | %s | %.2f | %.2f | %d | %d |\n", n,
			echo.rate(), us(echo.p50), us(echo.p99), wire.rate(), sel.rate(), us(sel.p50), us(sel.p99),
			sel.rate()/echo.rate(), sel.rate()/wire.rate(), sel.failures, sys.selector.Stats().EventsDropped-droppedBefore)
	}
	// Once the cores are all busy, throughput is cores / CPU per request: the
	// CPU columns say where a select/echo ratio comes from on this machine.
	fmt.Fprintf(out, "\nCPU time per answered request, whole process (client, NATS server, services), and cores busy (%d available):\n\n", runtime.NumCPU())
	fmt.Fprintln(out, "| in flight | echo CPU/req | echo cores | wire CPU/req | wire cores | select CPU/req | select cores |")
	fmt.Fprintln(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for i, l := range levels {
		fmt.Fprintf(out, "| %d | %s | %s | %s | %s | %s | %s |\n", o.inflight[i],
			l.echo.cpuPerRequest(), l.echo.coresBusy(), l.wire.cpuPerRequest(), l.wire.coresBusy(), l.sel.cpuPerRequest(), l.sel.coresBusy())
	}

	// Every event of the load that was not dropped is now in the stream (the
	// selector's publishes are acknowledged); the sink starts against that
	// backlog, so its ingest rate is measured on its own rather than
	// competing for the same cores with the load it is meant to absorb.
	settleSelector(sys.selector)
	st := sys.selector.Stats()
	if err := startProfile(o.sinkProfile); err != nil {
		return err
	}
	sinks := make([]*metricssink.Service, o.sinks)
	for i := range sinks {
		if sinks[i], err = sys.startSink(); err != nil {
			return err
		}
	}
	// sinkTotals sums the sinks' counters; a poison event or a store error
	// (the sinks log nowhere here) ends the wait and fails the run.
	sinkTotals := func() (stored, inserted, lag, faults uint64) {
		for _, sink := range sinks {
			sk := sink.Stats()
			stored += sk.Inserted + sk.Duplicates
			inserted += sk.Inserted
			lag = max(lag, sk.ConsumerLag)
			faults += sk.Poison + sk.StoreErrors
		}
		return stored, inserted, lag, faults
	}
	drainStart := time.Now()
	var maxLag uint64
	waitFor(sinkWaitLimit, func() bool {
		n, _, lag, faults := sinkTotals()
		maxLag = max(maxLag, lag)
		return n >= st.EventsPublished || faults > 0
	})
	drain := time.Since(drainStart)
	pprof.StopCPUProfile()
	n, inserted, lag, faults := sinkTotals()
	ingest := float64(inserted) / drain.Seconds()
	store := "SQLite"
	switch {
	case o.sinkDiscard:
		store = "nothing (-sink-discard)"
	case o.sinkOnPostgres():
		store = "PostgreSQL"
	}
	fmt.Fprintf(out, "\nwire: %d events dropped (buffer full)\n", wr.events.Stats().Dropped)
	fmt.Fprintf(out, "selector: %d selections, %d events published, %d dropped, %d failed\n", st.Selections, st.EventsPublished, st.EventsDropped, st.EventsFailed)
	fmt.Fprintf(out, "metrics-sink (%d): drained a backlog of %d events into %s in %s: %.0f rows/s ingest (%.1fx the selector's best %.0f selections/s); largest consumer lag seen %d messages, lag at the end %d\n",
		o.sinks, inserted, store, drain.Round(time.Millisecond), ingest, ingest/best, best, maxLag, lag)
	if faults > 0 {
		return fmt.Errorf("the sinks met %d poison events or store errors (stored %d of %d events)", faults, n, st.EventsPublished)
	}
	if n < st.EventsPublished {
		return fmt.Errorf("the sinks stored %d of %d events in %s", n, st.EventsPublished, drain)
	}
	last := levels[len(levels)-1]
	return sustain(ctx, out, client, sys.selector, bodies, sustained{
		inflight: o.inflight[len(o.inflight)-1], duration: o.duration,
		echo: last.echo, alone: last.sel, storeName: store, discard: o.sinkDiscard,
		sinkCounts: func() (inserted, faults uint64) {
			_, inserted, _, faults = sinkTotals()
			return inserted, faults
		},
	})
}

// sustained is what the sustained phase runs and compares with: the last
// load level (inflight for duration) and its echo and select results alone.
type sustained struct {
	inflight   int
	duration   time.Duration
	echo       result
	alone      result
	storeName  string
	discard    bool
	sinkCounts func() (inserted, faults uint64)
}

// sustain runs the last load level again with the sinks consuming, as a
// deployment runs them, and samples the backlog (events the stream took
// and the sinks have not stored) while it lasts: sinks that keep up hold
// it level; sinks that fall behind let it grow for as long as the load
// lasts. The selector's rate here is what it reaches with the sinks sharing
// the machine and the stream; the drain before measured the sinks without
// that competition. Rates are over the load alone: events the selector
// still holds when it ends are reported apart. The stream's intake is the
// events the selector sent, in the messages its last sequence counts; the
// backlog, sampled every 10 ms, comes from the selector's count of
// acknowledged events, which trails the stream by up to a few flow
// acknowledgements of a batch.
func sustain(ctx context.Context, out io.Writer, client *nats.Conn, sel *selector.Service, bodies [][]byte, p sustained) error {
	js, err := jetstream.New(client)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, bus.SelectionStream)
	if err != nil {
		return err
	}
	lastSeq := func() (uint64, error) {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", bus.SelectionStream, err)
		}
		return info.State.LastSeq, nil
	}
	seqBefore, err := lastSeq()
	if err != nil {
		return err
	}
	// The selector counts an event published when its ack arrives, which
	// can be after a sink stored it: never below zero.
	backlog := func() int64 {
		inserted, _ := p.sinkCounts()
		return max(0, int64(sel.Stats().EventsPublished)-int64(inserted))
	}
	insertedBefore, _ := p.sinkCounts()
	before := sel.Stats()
	const slots = 8
	eighths := [slots]int64{-1, -1, -1, -1, -1, -1, -1, -1} // -1: no sample fell in it
	var maxBacklog int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				b := backlog()
				maxBacklog = max(maxBacklog, b)
				if i := int(now.Sub(start) * slots / p.duration); i < slots {
					eighths[i] = b
				}
			}
		}
	}()
	r := load(client, bus.SelectSubject, bodies, p.inflight, p.duration)
	loadEnd := time.Now()
	insertedAtEnd, _ := p.sinkCounts()
	atEnd := sel.Stats()
	backlogAtEnd := backlog()
	seqAtEnd, seqErr := lastSeq()
	close(done)
	<-sampled
	if seqErr != nil {
		return seqErr
	}

	settleSelector(sel)
	caughtUp := waitFor(sinkWaitLimit, func() bool {
		_, faults := p.sinkCounts()
		return backlog() == 0 || faults > 0
	})
	catchUp := time.Since(loadEnd)

	secs := r.elapsed.Seconds()
	took := float64(atEnd.EventsSent-before.EventsSent) / secs
	messages := float64(seqAtEnd-seqBefore) / secs
	stored := float64(insertedAtEnd-insertedBefore) / secs
	verb := "stored"
	if p.discard {
		verb = "acknowledged"
	}
	fmt.Fprintf(out, "\nsustained, %d in flight for %s with the sinks consuming: %.0f selections/s (%.2f of echo; %.2fx the selections alone), p50 %s, p99 %s, %d events dropped, %s cores busy (this process)\n",
		p.inflight, p.duration, r.rate(), r.rate()/p.echo.rate(), r.rate()/p.alone.rate(), us(r.p50), us(r.p99), atEnd.EventsDropped-before.EventsDropped, r.coresBusy())
	fmt.Fprintf(out, "during the load the stream took in %.0f events/s in %.0f messages/s (%.1f events each) and the sinks %s %.0f rows/s into %s (%.2fx the selections); %d events were still in the selector when it ended\n",
		took, messages, took/max(messages, 1e-9), verb, stored, p.storeName, stored/r.rate(), eventsHeld(atEnd))
	var trail []string
	for _, b := range eighths {
		if b < 0 {
			trail = append(trail, "-")
			continue
		}
		trail = append(trail, strconv.FormatInt(b, 10))
	}
	fmt.Fprintf(out, "backlog (in the stream, not yet stored) at each eighth of the load: %s; largest %d; %d when the load ended; all stored %s after it ended\n",
		strings.Join(trail, " "), maxBacklog, backlogAtEnd, catchUp.Round(time.Millisecond))
	final := sel.Stats()
	if _, faults := p.sinkCounts(); faults > 0 {
		return fmt.Errorf("the sinks met %d poison events or store errors during the sustained load", faults)
	}
	if failed := final.EventsFailed - before.EventsFailed; failed > 0 {
		return fmt.Errorf("the selector failed to publish %d events during the sustained load", failed)
	}
	if held := eventsHeld(final); held > 0 {
		return fmt.Errorf("the selector still holds %d events after the sustained load", held)
	}
	if !caughtUp {
		return fmt.Errorf("the sinks left %d events unstored %s after the sustained load", backlog(), catchUp.Round(time.Millisecond))
	}
	return nil
}

// sinkWaitLimit bounds each wait for the sinks to store a backlog.
const sinkWaitLimit = 120 * time.Second

// waitFor polls done every 10 ms until it holds (true) or limit passes (false).
func waitFor(limit time.Duration, done func() bool) bool {
	deadline := time.Now().Add(limit)
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// startWire starts the wire responder: per request it does what the
// selector does besides selecting (reply with a recorded reply, hand a
// recorded event to publisher goroutines that publish it asynchronously
// with a fresh Nats-Msg-Id into a stream like the selection stream), so the
// select/wire ratio shows what the selection itself costs on top of the
// messaging a decision needs.
func startWire(ctx context.Context, url string, client *nats.Conn) (*wire, error) {
	reply, err := client.Request(bus.SelectSubject, []byte(`{"task_category":"code"}`), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("record a selection reply: %w", err)
	}
	adminJS, err := jetstream.New(client)
	if err != nil {
		return nil, err
	}
	sel, err := adminJS.Stream(ctx, bus.SelectionStream)
	if err != nil {
		return nil, err
	}
	last, err := sel.GetLastMsgForSubject(ctx, bus.SelectionEventSubject("code"))
	if err != nil {
		return nil, fmt.Errorf("record a decision event: %w", err)
	}
	// The message may hold several events, packed: the wire sends one.
	var recorded []byte
	for data := range events.Each(last.Data) {
		recorded = data
		break
	}
	if _, err := adminJS.CreateStream(ctx, jetstream.StreamConfig{
		Name: wireStream, Subjects: []string{wireStream + ".>"}, Storage: jetstream.FileStorage, Duplicates: bus.SelectionDedupWindow, AllowBatchPublish: true,
		PersistMode: sel.CachedInfo().Config.PersistMode,
	}); err != nil {
		return nil, err
	}
	// Like the selector: replies on one connection, events on another.
	nc, err := nats.Connect(url, nats.Name("bench-wire"))
	if err != nil {
		return nil, err
	}
	eventConn, err := nats.Connect(url, nats.Name("bench-wire-events"))
	if err != nil {
		nc.Close()
		return nil, err
	}
	publisher, err := selector.NewEventPublisher(eventConn, wireStream, zerolog.Nop(), selector.DefaultConfig().EventBuffer, selector.DefaultConfig().EventRetries,
		selector.WithPackLimit(selector.DefaultConfig().EventPack))
	if err != nil {
		nc.Close()
		eventConn.Close()
		return nil, err
	}
	w := &wire{events: publisher}
	stopPub, pubDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pubDone)
		w.events.Run(context.WithoutCancel(ctx), stopPub)
		w.events.Wait()
	}()
	if _, err := micro.AddService(nc, micro.Config{Name: "wire", Version: "1.0.0", QueueGroup: "wire",
		Endpoint: &micro.EndpointConfig{Subject: wireSubject, Handler: micro.HandlerFunc(func(r micro.Request) {
			_ = r.Respond(reply.Data)
			msg := &nats.Msg{Subject: wireStream + ".events", Data: recorded, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, nuid.Next())
			w.events.Publish(msg)
			w.answered.Add(1)
		})},
	}); err != nil {
		nc.Close()
		close(stopPub)
		<-pubDone
		eventConn.Close()
		return nil, err
	}
	w.stop = func() {
		nc.Close()
		close(stopPub)
		<-pubDone
		eventConn.Close()
	}
	return w, nil
}

// wire is the running wire responder.
type wire struct {
	events   *selector.EventPublisher
	answered atomic.Uint64
	stop     func()
}

// settle waits until every queued event is published, failed or dropped,
// so that the next measurement does not pay for this one's backlog.
func (w *wire) settle() {
	for st := w.events.Stats(); st.Published+st.Failed+st.Dropped < w.answered.Load(); st = w.events.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
}

// settleSelector waits (30 s at most) until the selector has published,
// failed or dropped the event of every selection so far.
func settleSelector(sel *selector.Service) {
	if !waitFor(30*time.Second, func() bool { return eventsHeld(sel.Stats()) == 0 }) {
		fmt.Fprintf(os.Stderr, "bench-selection: after 30 s the selector still holds %d events; measuring on\n", eventsHeld(sel.Stats()))
	}
}

// eventsHeld is how many selections' events the selector has not yet
// published, failed or dropped: buffered, or sent and not acknowledged.
func eventsHeld(st selector.Stats) uint64 {
	if done := st.EventsPublished + st.EventsFailed + st.EventsDropped; done < st.Selections {
		return st.Selections - done
	}
	return 0
}

// startProfile starts a CPU profile into path, if one is asked for; the
// caller stops it.
func startProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// The file stays open until the process exits: pprof writes to it until
	// StopCPUProfile.
	return pprof.StartCPUProfile(f)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f us", float64(d.Nanoseconds())/1e3) }

// writeProfile writes the named runtime profile (such as "mutex") to path,
// if one is asked for.
func writeProfile(name, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup(name).WriteTo(f, 0), f.Close())
}

// discardStore acknowledges every batch as stored without writing it:
// with it the sinks run at what fetching from NATS and decoding allow.
type discardStore struct{ metricssink.Store }

func (discardStore) Insert(_ context.Context, recs []metricssink.Record) (int, error) {
	return len(recs), nil
}

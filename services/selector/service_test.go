package selector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs/obstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// fakeClock is a settable clock shared by the test and the service.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}
func (c *fakeClock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// seedRegistry writes the example registry and a config into the buckets,
// the way the registry service stores them.
func seedRegistry(t *testing.T, js jetstream.JetStream, cfg selection.Config) {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Parse(exampledata.RegistryFile, exampledata.Registry, exampledata.CategoriesFile, exampledata.Categories)
	if err != nil {
		t.Fatal(err)
	}
	put := func(bucket, key string, v any) {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	put(bus.CategoriesBucket, benchmarksKey, cat.Benchmarks)
	for _, c := range cat.Categories {
		put(bus.CategoriesBucket, c.Name, c)
	}
	for _, m := range cat.Models {
		put(bus.ModelsBucket, m.ID, m)
	}
	put(bus.ConfigBucket, bus.SelectionConfigKey, cfg)
}

func publishSample(t *testing.T, js jetstream.JetStream, s telemetry.Sample) {
	t.Helper()
	data, _ := json.Marshal(s)
	if _, err := js.Publish(context.Background(), bus.TelemetrySubject(s.Host, s.Index), data); err != nil {
		t.Fatal(err)
	}
}

func gpuSample(host string, index int, at time.Time) telemetry.Sample {
	return telemetry.Sample{Host: host, Index: index, UUID: "GPU-" + host, Name: "NVIDIA A100-SXM4-80GB", Timestamp: at, Source: "simulated",
		MemoryTotalMB: 81920, MemoryUsedMB: 1920, MemoryFreeMB: 80000, UtilizationGPUPct: 10, TemperatureC: 40, PowerW: 90, PowerLimitW: 400, Healthy: true}
}

// world is a server holding the example registry under a config and one
// fresh sample of GPU node-a/0, taken at now.
type world struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	now time.Time
}

func newWorld(t *testing.T, cfg selection.Config) world {
	t.Helper()
	srv, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	now := time.Now().UTC()
	seedRegistry(t, js, cfg)
	publishSample(t, js, gpuSample("node-a", 0, now))
	return world{srv: srv, nc: nc, js: js, now: now}
}

// startSelector runs a selector until the test ends and waits until it is ready.
func startSelector(t *testing.T, nc *nats.Conn, clock *fakeClock, tweak func(*Config), opts ...Option) *Service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.FleetRebuildInterval = 10 * time.Millisecond
	cfg.CatalogDebounce = 5 * time.Millisecond
	cfg.WarmupTimeout = 10 * time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := New(cfg, nc, append([]Option{WithClock(clock.now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("selector stopped before ready: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("selector not ready after 15s")
	}
	return svc
}

// selectRaw sends a raw request and returns the reply or the micro error code.
func selectRaw(t *testing.T, nc *nats.Conn, body []byte) (selection.Reply, string, errorReply) {
	t.Helper()
	msg, err := nc.Request(bus.SelectSubject, body, 5*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		var er errorReply
		if err := json.Unmarshal(msg.Data, &er); err != nil {
			t.Fatalf("error body %q: %v", msg.Data, err)
		}
		return selection.Reply{}, code, er
	}
	var rep selection.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatalf("reply %q: %v", msg.Data, err)
	}
	return rep, "", errorReply{}
}

func selectJSON(t *testing.T, nc *nats.Conn, req selection.Request) (selection.Reply, string, errorReply) {
	t.Helper()
	body, _ := json.Marshal(req)
	return selectRaw(t, nc, body)
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSelectorAnswersAndPublishesEvents(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	now := time.Now().UTC()
	clock := newFakeClock(now)
	seedRegistry(t, js, selection.DefaultConfig())
	for i := range 8 { // room for all 20 placements' reservations
		publishSample(t, js, gpuSample("node-a", i, now))
	}
	svc := startSelector(t, nc, clock, nil)

	const n = 20
	ids := map[string]bool{}
	for i := range n {
		rep, code, er := selectJSON(t, nc, selection.Request{RequestID: "r" + string(rune('a'+i)), TaskCategory: "code"})
		if code != "" {
			t.Fatalf("error %s: %+v", code, er)
		}
		if rep.Mode != selection.ModeGPUAware || rep.GPU == nil || rep.Degraded || rep.EventID == "" {
			t.Fatalf("reply %+v", rep)
		}
		ids[rep.EventID] = true
	}
	eventually(t, "20 events in the stream", func() bool { return readEvents(t, js, bus.SelectionStream).events == n })
	got := 0
	for _, data := range readEvents(t, js, bus.SelectionStream).data {
		var ev events.SelectionEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatal(err)
		}
		if !ids[ev.EventID] || ev.TaskCategory != "code" || ev.GPUID == nil || ev.Request.TaskCategory != "code" {
			t.Fatalf("event %+v does not match a reply", ev)
		}
		got++
	}
	if got != n {
		t.Fatalf("read %d events, want %d", got, n)
	}
	// A batch's last events are acknowledged when it is committed, after
	// batchIdleCommit without events.
	eventually(t, "every event acknowledged", func() bool { return svc.Stats().EventsPublished == n })
	if st := svc.Stats(); st.Selections != n || st.EventsDropped != 0 || st.EventsRetried != 0 || st.GPUs != 8 {
		t.Errorf("stats %+v", st)
	}
}

// With WithEventConn the events travel on that connection, and reach the
// stream as they do on the request connection.
func TestSelectorPublishesOnTheEventConn(t *testing.T) {
	cfg := selection.DefaultConfig()
	cfg.ReservationTTLMs = 0 // five placements must not fill the one GPU
	w := newWorld(t, cfg)
	srv, nc, js, now := w.srv, w.nc, w.js, w.now
	eventConn := natstest.Connect(t, srv)
	svc := startSelector(t, natstest.Connect(t, srv), newFakeClock(now), nil, WithEventConn(eventConn))
	const n = 5
	for range n {
		if _, code, er := selectJSON(t, nc, selection.Request{TaskCategory: "code"}); code != "" {
			t.Fatalf("error %s: %+v", code, er)
		}
	}
	eventually(t, "every event acknowledged", func() bool { return svc.Stats().EventsPublished == n })
	got := readEvents(t, js, bus.SelectionStream)
	if got.events != n {
		t.Fatalf("stream holds %d events, want %d", got.events, n)
	}
	if sent := eventConn.Stats().OutMsgs; sent < got.messages {
		t.Fatalf("the event connection sent %d messages, want at least the stream's %d", sent, got.messages)
	}
}

func TestSelectorErrorsKeepServing(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	clock := newFakeClock(time.Now())
	seedRegistry(t, js, selection.DefaultConfig())
	svc := startSelector(t, nc, clock, func(c *Config) { c.MaxRequestBytes = 1024 })
	tests := []struct {
		name string
		body string
		code string
		want string
	}{
		{"invalid JSON", `{"task_category":`, bus.CodeBadRequest, "malformed"},
		{"unknown field", `{"task_category":"code","colour":"red"}`, bus.CodeBadRequest, "colour"},
		{"text after the request", `{"task_category":"code"} {"task_category":"math"}`, bus.CodeBadRequest, "after the request"},
		{"a string where a number goes", `{"task_category":"code","constraints":{"min_score":"high"}}`, bus.CodeBadRequest, "min_score"},
		{"unknown category", `{"task_category":"poetry"}`, bus.CodeNotFound, `"poetry"`},
		{"unknown model allowed", `{"task_category":"code","constraints":{"allow_models":["gpt-9"]}}`, bus.CodeNotFound, `"gpt-9"`},
		{"impossible constraints", `{"task_category":"code","constraints":{"max_gpu_memory_mb":10}}`, bus.CodeUnprocessable, "max_gpu_memory_mb"},
		{"bad value", `{"task_category":"code","constraints":{"min_score":7}}`, bus.CodeBadRequest, "min_score"},
		{"oversized", `{"task_category":"code","request_id":"` + strings.Repeat("x", 2000) + `"}`, bus.CodeBadRequest, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code, er := selectRaw(t, nc, []byte(tt.body))
			if code != tt.code || !strings.Contains(er.Error, tt.want) {
				t.Fatalf("code %q body %+v, want %s mentioning %q", code, er, tt.code, tt.want)
			}
			if tt.code == bus.CodeUnprocessable && (er.NoCandidate == nil || er.NoCandidate.ModelRejects["max_gpu_memory_mb"] == 0) {
				t.Errorf("422 body lacks the per-filter counts: %+v", er)
			}
			// The service keeps serving.
			if _, code, er := selectJSON(t, nc, selection.Request{TaskCategory: "math"}); code != "" {
				t.Fatalf("valid request after %s failed: %s %+v", tt.name, code, er)
			}
		})
	}
	if st := svc.Stats(); st.Errors[bus.CodeBadRequest] != 6 || st.Errors[bus.CodeNotFound] != 2 || st.Errors[bus.CodeUnprocessable] != 1 {
		t.Errorf("error counters %+v", st.Errors)
	}
}

func TestSelectorNotReadyWithoutRegistry(t *testing.T) {
	_, nc := natstest.Start(t)
	startSelector(t, nc, newFakeClock(time.Now()), nil)
	_, code, er := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
	if code != bus.CodeNotReady || !strings.Contains(er.Error, "no valid registry") {
		t.Fatalf("code %q %+v, want 503", code, er)
	}
}

func TestSelectorConfigChangesApplyLive(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	nc, js, now := w.nc, w.js, w.now
	svc := startSelector(t, nc, newFakeClock(now), nil)
	if rep, _, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"}); rep.Mode != selection.ModeGPUAware {
		t.Fatalf("mode %s before the switch", rep.Mode)
	}
	off := selection.DefaultConfig()
	off.GPUAware = false // the seed's rollback: disable GPU monitoring
	data, _ := json.Marshal(off)
	kv, err := js.KeyValue(t.Context(), bus.ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(t.Context(), bus.SelectionConfigKey, data)
	if err != nil {
		t.Fatal(err)
	}
	// Stats say when the write is live (the CLI waits on this).
	eventually(t, "the selector to report the config's revision applied", func() bool {
		return svc.Stats().AppliedRevisions[bus.ConfigBucket] >= rev
	})
	rep, _, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
	if rep.Mode != selection.ModeMultiCategory || rep.GPU != nil || !strings.Contains(rep.Reason, "gpu_aware is switched off") {
		t.Fatalf("once applied: mode %s, gpu %+v, reason %q", rep.Mode, rep.GPU, rep.Reason)
	}
}

// Values put into the buckets around the registry: an invalid config is
// refused (the previous one stays), and an invalid catalog does not stop a
// config change - the rollback switch - from applying.
func TestSelectorValuesWrittenAroundTheRegistry(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	nc, js, now := w.nc, w.js, w.now
	var logs logtest.Buffer
	startSelector(t, nc, newFakeClock(now), nil, WithLogger(zerolog.New(&logs)))
	put := func(bucket, key, value string) {
		t.Helper()
		kv, err := js.KeyValue(t.Context(), bucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(t.Context(), key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	mode := func() selection.Mode {
		rep, code, er := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
		if code != "" {
			t.Fatalf("select: %s %+v", code, er)
		}
		return rep.Mode
	}

	put(bus.ModelsBucket, "broken", `{"id":"broken"}`)
	eventually(t, "the invalid catalog to be noticed", func() bool {
		return strings.Contains(logs.String(), "serving the last valid catalog")
	})
	off := selection.DefaultConfig()
	off.GPUAware = false
	seedConfig, _ := json.Marshal(off)
	put(bus.ConfigBucket, bus.SelectionConfigKey, string(seedConfig))
	eventually(t, "gpu_aware=false to apply over the invalid catalog", func() bool { return mode() == selection.ModeMultiCategory })

	for i, bad := range []string{
		`{"gpu_awre": false}`, // unknown key: would have meant every default, gpu_aware on
		strings.Replace(string(seedConfig), `"stale_after_ms":15000`, `"stale_after_ms":10000000000000`, 1),
		`{"default_mode":`,
	} {
		put(bus.ConfigBucket, bus.SelectionConfigKey, bad)
		eventually(t, "the invalid config to be refused", func() bool {
			return strings.Count(logs.String(), "ignoring an invalid value") == i+1
		})
		if got := mode(); got != selection.ModeMultiCategory {
			t.Fatalf("after config %s the mode is %s: the previous config was not kept", bad, got)
		}
	}
}

func TestCheckSample(t *testing.T) {
	now := time.Now()
	good := gpuSample("node-a", 3, now)
	tests := []struct {
		name    string
		subject string
		at      time.Time
		wantErr bool
	}{
		{"its own subject", bus.TelemetrySubject("node-a", 3), now, false},
		{"dated a little ahead (clock skew)", bus.TelemetrySubject("node-a", 3), now.Add(maxSampleSkew), false},
		{"another host's subject", bus.TelemetrySubject("node-b", 3), now, true},
		{"another index's subject", bus.TelemetrySubject("node-a", 4), now, true},
		{"dated too far ahead", bus.TelemetrySubject("node-a", 3), now.Add(maxSampleSkew + time.Second), true},
		{"dated after year 2262", bus.TelemetrySubject("node-a", 3), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			s.Timestamp = tt.at
			err := checkSample(tt.subject, &s, now)
			if tt.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrBadSample)) {
				t.Fatalf("checkSample = %v, want error %v (ErrBadSample)", err, tt.wantErr)
			}
		})
	}
}

func TestSelectorIgnoresRefusedSamples(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	nc, js, now := w.nc, w.js, w.now
	svc := startSelector(t, nc, newFakeClock(now), nil)

	spoofed, _ := json.Marshal(gpuSample("victim", 0, now))
	if _, err := js.Publish(t.Context(), bus.TelemetrySubject("attacker", 0), spoofed); err != nil {
		t.Fatal(err)
	}
	publishSample(t, js, gpuSample("node-a", 1, now.Add(time.Hour)))
	publishSample(t, js, gpuSample("node-c", 0, now)) // in order after the two above
	eventually(t, "node-c's sample", func() bool {
		rep, code, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code", Constraints: selection.Constraints{Hosts: []string{"node-c"}}})
		return code == "" && rep.GPU != nil
	})
	if n := svc.Stats().GPUs; n != 2 {
		t.Fatalf("%d GPUs known, want 2 (node-a/0, node-c/0): a refused sample was used", n)
	}
	for _, host := range []string{"victim", "attacker"} {
		if _, code, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code", Constraints: selection.Constraints{Hosts: []string{host}}}); code != bus.CodeUnprocessable {
			t.Errorf("placing on %s: code %q, want 422 (no such GPU)", host, code)
		}
	}
}

func TestSelectorRestartWarmsBeforeAnswering(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	now := time.Now()
	seedRegistry(t, js, selection.DefaultConfig())
	for i := range 4 {
		publishSample(t, js, gpuSample("node-b", i, now))
	}
	// Stop a first selector, then start a second: its very first answer must
	// already know the registry and the four GPUs.
	first, err := New(DefaultConfig(), nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	<-first.Ready()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	second := startSelector(t, nc, newFakeClock(now), nil)
	rep, code, er := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
	if code != "" || rep.Mode != selection.ModeGPUAware || rep.GPU == nil || rep.GPU.Host != "node-b" {
		t.Fatalf("first reply after restart: %s %+v %+v", code, er, rep)
	}
	if st := second.Stats(); st.GPUs != 4 {
		t.Errorf("warmed with %d GPUs, want 4", st.GPUs)
	}
}

func TestSelectorStaleTelemetryDegrades(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	nc, now := w.nc, w.now
	clock := newFakeClock(now)
	startSelector(t, nc, clock, nil)
	if rep, _, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"}); rep.GPU == nil {
		t.Fatal("no GPU while telemetry is fresh")
	}
	// The agent stops publishing; past stale_after its GPU is never chosen.
	clock.set(now.Add(selection.DefaultConfig().StaleAfter() + time.Second))
	rep, code, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
	if code != "" || rep.GPU != nil || !rep.Degraded || rep.Mode != selection.ModeMultiCategory {
		t.Fatalf("after the threshold: %s %+v", code, rep)
	}
}

// Selections run in parallel and place without the ledger held. Here every
// selection of a burst runs before any places, as if all ran at once: each
// placement must see the reservations placed before it (selecting again),
// so the GPU's free memory is never promised twice and each result names
// the reservations it was placed against.
func TestConcurrentPlacementsNeverOvercommit(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	clock := newFakeClock(w.now)
	svc := startSelector(t, w.nc, clock, nil)
	snap := svc.snap.Load()
	key := telemetry.Key("node-a", 0)
	const burst = 8
	results := make([]selection.Result, burst)
	for i := range results {
		q := selection.Query{Request: selection.Request{TaskCategory: "code"}, Now: clock.now(), Seed: uint64(i)}
		res, err := snap.engine.Select(q, snap.fleet)
		if err != nil || res.GPU == nil {
			t.Fatalf("selection %d: %v (GPU %v)", i, err, res.GPU)
		}
		if seen, _ := res.ReservedMB(key); seen != 0 {
			t.Fatalf("selection %d saw %d MB reserved before any placement", i, seen)
		}
		results[i] = res
	}
	var placed int64
	for i, res := range results {
		q := selection.Query{Request: selection.Request{TaskCategory: "code"}, Now: clock.now(), Seed: uint64(i)}
		got, err := svc.place(snap, q, res, fmt.Sprint("burst-", i))
		if errors.Is(err, selection.ErrNoCandidate) {
			continue // the GPU is full
		}
		if err != nil {
			t.Fatalf("placement %d: %v", i, err)
		}
		if seen, _ := got.ReservedMB(key); seen != placed {
			t.Fatalf("placement %d was decided against %d MB reserved, the ledger held %d", i, seen, placed)
		}
		placed += got.Model.GPUMemoryMB
	}
	if free := gpuSample("node-a", 0, w.now).MemoryFreeMB; placed == 0 || placed > free {
		t.Fatalf("the burst placed %d MB on a GPU with %d MB free", placed, free)
	}
	if got := svc.ledger.ReservedMB(key, clock.now()); got != placed {
		t.Fatalf("ledger holds %d MB, the placements %d MB", got, placed)
	}
	// Every placement after the first found the GPU changed since it selected.
	if got := svc.Stats().Reselections; got != burst-1 {
		t.Fatalf("%d reselections, want %d", got, burst-1)
	}
}

func TestReplicasShareReservations(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	srv, nc, now := w.srv, w.nc, w.now
	clock := newFakeClock(now)
	a := startSelector(t, nc, clock, nil)
	b := startSelector(t, natstest.Connect(t, srv), clock, nil)
	var reserved int64
	for range 4 {
		rep, code, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
		if code == "" && rep.GPU != nil {
			reserved += rep.GPUMemoryMB
		}
	}
	key := telemetry.Key("node-a", 0)
	eventually(t, "both replicas to hold every reservation", func() bool {
		return a.ledger.ReservedMB(key, clock.now()) == reserved && b.ledger.ReservedMB(key, clock.now()) == reserved
	})
	if reserved == 0 {
		t.Fatal("nothing was placed")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, nc := natstest.Start(t)
	tests := []struct {
		name  string
		tweak func(*Config)
	}{
		{"zero request limit", func(c *Config) { c.MaxRequestBytes = 0 }},
		{"zero buffer", func(c *Config) { c.EventBuffer = 0 }},
		{"buffer beyond MaxEventBuffer", func(c *Config) { c.EventBuffer = 99999999999999 }},
		{"workers beyond MaxWorkers", func(c *Config) { c.Workers = MaxWorkers + 1 }},
		{"negative retries", func(c *Config) { c.EventRetries = -1 }},
		{"retries beyond the dedup window", func(c *Config) { c.EventRetries = 9 }},
		{"retries without end", func(c *Config) { c.EventRetries = math.MaxInt }},
		{"zero rebuild interval", func(c *Config) { c.FleetRebuildInterval = 0 }},
		{"pack limit 0", func(c *Config) { c.EventPack = 0 }},
		{"pack limit above events.MaxPerMessage", func(c *Config) { c.EventPack = events.MaxPerMessage + 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.tweak(&cfg)
			if _, err := New(cfg, nc); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

// Validate names every bad setting at once, so that one start shows them all.
func TestValidateNamesEveryBadSetting(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	cfg.Workers, cfg.EventPack, cfg.DrainTimeout, cfg.CatalogDebounce = -1, 0, 0, -time.Second
	err := cfg.Validate()
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, name := range []string{"SELECTOR_WORKERS", "SELECTOR_EVENT_PACK", "SELECTOR_DRAIN_TIMEOUT", "SELECTOR_CATALOG_DEBOUNCE"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("err = %v; it does not name %s", err, name)
		}
	}
}

// The stream's dedup window covers every retry the default config and up to
// eight retries make; nine would outlast it (TestNewRejectsBadConfig).
func TestEventRetrySpan(t *testing.T) {
	tests := []struct {
		retries int
		want    time.Duration
	}{
		{0, 4600 * time.Millisecond},
		{1, 6650 * time.Millisecond},
		{5, 16150 * time.Millisecond},
		{8, 27750 * time.Millisecond},
		{9, 31750 * time.Millisecond},
		{1 << 40, math.MaxInt64}, // saturates, neither loops for ages nor wraps
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.retries), func(t *testing.T) {
			if got := eventRetrySpan(tt.retries); got != tt.want {
				t.Fatalf("eventRetrySpan(%d) = %s, want %s", tt.retries, got, tt.want)
			}
		})
	}
	if span := eventRetrySpan(DefaultConfig().EventRetries); span > bus.SelectionDedupWindow {
		t.Fatalf("default retries span %s, beyond the %s dedup window", span, bus.SelectionDedupWindow)
	}
}

func TestSelectorMetrics(t *testing.T) {
	w := newWorld(t, selection.DefaultConfig())
	nc, now := w.nc, w.now
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	svc, err := New(cfg, nc, WithClock(newFakeClock(now).now), WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-svc.Ready()
	if err := svc.Check(); err != nil {
		t.Fatalf("Check after ready: %v", err)
	}
	rep, _, _ := selectJSON(t, nc, selection.Request{TaskCategory: "code"})
	selectRaw(t, nc, []byte(`{"task_category":"secret-project-x"}`))
	selectJSON(t, nc, selection.Request{TaskCategory: "code", Constraints: selection.Constraints{MaxGPUMemoryMB: 1}})
	eventually(t, "the event to be acknowledged", func() bool { return svc.Stats().EventsPublished == 1 })
	// A handler records its metrics after its reply went out: wait for all three.
	eventually(t, "the three decisions to be recorded", func() bool {
		return obstest.Scrape(t, reg)["orch_selector_decision_duration_seconds_count"] == 3
	})

	want := map[string]float64{
		`orch_selector_decisions_total{category="code",mode="gpu_aware",model="` + rep.ModelID + `",outcome="selected"}`: 1,
		`orch_selector_decisions_total{category="",mode="",model="",outcome="unknown_category"}`:                         1,
		`orch_selector_decisions_total{category="code",mode="gpu_aware",model="",outcome="no_candidate"}`:                1,
		`orch_selector_events_published_total`:                                  1,
		`orch_selector_events_dropped_total`:                                    0,
		`orch_selector_placements_reselected_total`:                             0,
		`orch_gpu_sample_age_seconds{gpu="GPU-node-a",host="node-a",index="0"}`: 0,
		`orch_selector_decision_duration_seconds_count`:                         3,
	}
	got := obstest.Scrape(t, reg)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// SELECTOR_EVENT_PACK reaches the publisher: 1 sends each event in a
// message of its own, however many wait.
func TestSelectorEventPackLimit(t *testing.T) {
	cfg := selection.DefaultConfig()
	cfg.ReservationTTLMs = 0 // the placements must not fill the one GPU
	w := newWorld(t, cfg)
	svc := startSelector(t, w.nc, newFakeClock(w.now), func(c *Config) { c.EventPack = 1 })
	if svc.events.packEvents != 1 {
		t.Fatalf("the publisher packs %d events, want 1", svc.events.packEvents)
	}
	const n, parallel = 40, 8
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for range n / parallel {
				if _, code, er := selectJSON(t, w.nc, selection.Request{TaskCategory: "code"}); code != "" {
					t.Errorf("error %s: %+v", code, er)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every event acknowledged", func() bool { return svc.Stats().EventsPublished == n })
	if got := readEvents(t, w.js, bus.SelectionStream); got.events != n || got.messages != n {
		t.Fatalf("stream holds %d events in %d messages, want %d in %d", got.events, got.messages, n, n)
	}
}

// DefaultConfig is what envconfig makes with no variables set (the NATS
// connection settings aside: DefaultConfig leaves them to bus).
func TestDefaultConfigIsEnvconfigs(t *testing.T) {
	var fromEnv Config
	if err := envconfig.Process("SELECTOR_TEST_UNSET", &fromEnv); err != nil {
		t.Fatal(err)
	}
	fromEnv.ConnConfig = bus.ConnConfig{}
	if want := DefaultConfig(); !reflect.DeepEqual(fromEnv, want) {
		t.Fatalf("envconfig defaults %+v,\nDefaultConfig %+v", fromEnv, want)
	}
}

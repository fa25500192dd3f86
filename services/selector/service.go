package selector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	segjson "github.com/segmentio/encoding/json"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Version is the micro service version.
const Version = "1.0.0"

// Service is one selector replica.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	log    zerolog.Logger
	now    func() time.Time
	cache  *telemetry.Cache
	ledger *selection.Ledger
	reg    *registryState
	events *EventPublisher
	// eventSizeHint is the largest event encoded so far: buffers start that big.
	eventSizeHint atomic.Int64
	sharer        *sharer

	snap           atomic.Pointer[snapshot]
	catalogChanged chan struct{}
	ready          chan struct{}
	readyOnce      sync.Once

	selections atomic.Uint64
	// reselections counts placements selected again under the ledger lock.
	reselections atomic.Uint64
	errors       [5]atomic.Uint64 // by errorCodes index
	// handling is held shared by every request in flight and exclusively
	// by shutdown, which then sets stopping.
	handling sync.RWMutex
	stopping bool
	// ledgerMu serialises the ledger's writers (placements, other replicas'
	// reservations, newer samples) and a placement's check and reservation.
	ledgerMu   sync.Mutex
	registerer prometheus.Registerer
	metrics    *metrics
	// eventConn carries the decision events: nc unless WithEventConn set one.
	eventConn *nats.Conn
}

// errorCodes are the micro error codes the selector answers with.
var errorCodes = [5]string{bus.CodeBadRequest, bus.CodeNotFound, bus.CodeUnprocessable, bus.CodeNotReady, bus.CodeInternal}

// Option tunes a Service.
type Option func(*Service)

// WithLogger sets the logger (default: zerolog's global logger).
func WithLogger(l zerolog.Logger) Option { return func(s *Service) { s.log = l } }

// WithMetrics registers the selector's Prometheus collectors on reg
// (default: a private registry nobody scrapes).
func WithMetrics(reg prometheus.Registerer) Option { return func(s *Service) { s.registerer = reg } }

// WithEventConn publishes the decision events on nc instead of the request
// connection. The server reads each connection in one loop: on a second
// connection the events (2-3 KB each, with their acknowledgements) no longer
// queue behind the replies, nor the replies behind them. The caller owns nc
// and drains it after Run returns.
func WithEventConn(nc *nats.Conn) Option { return func(s *Service) { s.eventConn = nc } }

// WithClock replaces time.Now, for tests of staleness.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New checks cfg and prepares a selector on nc; Run starts it.
func New(cfg Config, nc *nats.Conn, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrConfig)
	}
	if cfg.Instance == "" {
		cfg.Instance = defaultInstance()
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %w", ErrConfig, err)
	}
	s := &Service{
		cfg: cfg, nc: nc, js: js, now: time.Now,
		log:            zerolog.Nop(),
		cache:          telemetry.NewCache(),
		ledger:         selection.NewLedger(),
		reg:            newRegistryState(),
		catalogChanged: make(chan struct{}, 1),
		ready:          make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With().Str("instance", cfg.Instance).Logger()
	if s.eventConn == nil {
		s.eventConn = nc
	}
	if s.events, err = NewEventPublisher(s.eventConn, bus.SelectionStream, s.log, cfg.EventBuffer, cfg.EventRetries, WithPackLimit(cfg.EventPack)); err != nil {
		return nil, fmt.Errorf("%w: jetstream for events: %w", ErrConfig, err)
	}
	s.sharer = &sharer{nc: nc, log: s.log}
	if s.registerer == nil {
		s.registerer = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(s, s.registerer)
	return s, nil
}

// Ready is closed once the selector has warmed and serves requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Check is the readiness check for /readyz: warmed, and a valid registry loaded.
func (s *Service) Check() error {
	select {
	case <-s.ready:
	default:
		return fmt.Errorf("%w: warming up from the buckets and the telemetry stream", ErrNotReady)
	}
	if snap := s.snap.Load(); snap == nil || snap.engine == nil {
		return fmt.Errorf("%w: no valid registry loaded", ErrNotReady)
	}
	if err := bus.Connected(s.nc); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}

// Run warms the caches from the buckets and the telemetry stream, then
// serves orch.select until ctx is done, and flushes buffered events.
func (s *Service) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancel(ctx)
	warm := newWarmup()
	// The watchers and the reservation sharer end with Run, whichever way it
	// returns: the sharer's last flush goes out before the caller drains.
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	// Every source registers before any watcher starts: registered as each
	// started, a source that warmed before the next one registered ended
	// the warm-up early (and the next one's warming closed it again: a
	// panic, seen once under load).
	telemetryDone := warm.done(bus.TelemetryStream)
	buckets := []struct {
		name   string
		apply  func(key string, value []byte) error
		warmed func()
	}{
		{bus.ModelsBucket, s.reg.applyModel, warm.done(bus.ModelsBucket)},
		{bus.CategoriesBucket, s.reg.applyCategory, warm.done(bus.CategoriesBucket)},
		{bus.ConfigBucket, func(key string, value []byte) error {
			if key != bus.SelectionConfigKey {
				return nil
			}
			return s.reg.applyConfig(value)
		}, warm.done(bus.ConfigBucket)},
	}
	for _, b := range buckets {
		wg.Go(func() { s.watchBucket(runCtx, b.name, b.apply, b.warmed) })
	}
	consumeCtx, err := s.consumeTelemetry(runCtx, telemetryDone)
	if err != nil {
		return err
	}
	defer consumeCtx.Stop()

	if s.cfg.ShareReservations {
		sub, err := s.nc.Subscribe(bus.ReservationSubject, s.onReservations)
		if err != nil {
			return fmt.Errorf("%w: subscribe %s: %w", ErrWarmup, bus.ReservationSubject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		wg.Go(func() { s.sharer.run(runCtx) })
	}

	if err := warm.wait(runCtx, s.cfg.WarmupTimeout); err != nil {
		return err
	}
	s.rebuild(true)

	pubCtx, cancelPub := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPub()
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		s.events.Run(pubCtx, stopPub)
		s.events.Wait()
	}()

	svc, err := s.addService()
	if err != nil {
		close(stopPub)
		<-pubDone
		return fmt.Errorf("%w: add micro service: %w", ErrWarmup, err)
	}
	// Ready means servable from any connection: the server must hold the
	// endpoint subscriptions first.
	if err := s.nc.FlushTimeout(s.cfg.WarmupTimeout); err != nil {
		s.log.Warn().Err(err).Msg("flush after adding the endpoints")
	}
	s.readyOnce.Do(func() { close(s.ready) })
	snap := s.snap.Load()
	s.log.Info().Int("gpus", snap.fleet.Len()).Bool("registry_loaded", snap.engine != nil).
		Str("subject", bus.SelectSubject).Msg("selector ready")

	s.maintain(runCtx)

	_ = svc.Stop()
	// Stop drains the endpoints without waiting for their handlers: wait for
	// those in flight, so every answered request's event is queued before
	// the publisher's last pass; later deliveries are refused.
	s.handling.Lock()
	s.stopping = true
	s.handling.Unlock()
	close(stopPub)
	flush := time.AfterFunc(s.cfg.DrainTimeout, cancelPub)
	<-pubDone
	flush.Stop()
	stop()
	wg.Wait()
	st := s.Stats()
	s.log.Info().Uint64("selections", st.Selections).Uint64("events_published", st.EventsPublished).
		Uint64("events_dropped", st.EventsDropped).Uint64("events_failed", st.EventsFailed).Msg("selector stopped")
	return nil
}

// addService registers the micro service. A micro endpoint handles its
// requests one at a time, so the selector adds Workers endpoints on the same
// subject and queue group: NATS spreads requests over them and they answer
// in parallel.
func (s *Service) addService() (micro.Service, error) {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:         "selector",
		Version:      Version,
		Description:  "picks a model and a GPU for a task category",
		QueueGroup:   bus.SelectQueueGroup,
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
	})
	if err != nil {
		return nil, err
	}
	for i := range s.cfg.Workers {
		err := svc.AddEndpoint("select-"+strconv.Itoa(i), micro.HandlerFunc(s.handle),
			micro.WithEndpointSubject(bus.SelectSubject),
			micro.WithEndpointMetadata(map[string]string{"request_schema": "selection-request", "response_schema": "selection-reply"}))
		if err != nil {
			_ = svc.Stop()
			return nil, err
		}
	}
	return svc, nil
}

// maintain rebuilds the engine after registry changes (debounced) and the
// fleet after telemetry changes (at most every FleetRebuildInterval).
func (s *Service) maintain(ctx context.Context) {
	tick := time.NewTicker(s.cfg.FleetRebuildInterval)
	defer tick.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.catalogChanged:
			debounce = time.After(s.cfg.CatalogDebounce)
		case <-debounce:
			debounce = nil
			s.rebuild(true)
		case <-tick.C:
			if cur := s.snap.Load(); cur == nil || cur.telemetryVersion != s.cache.Version() {
				s.rebuild(false)
			}
		}
	}
}

// rebuild compiles a new snapshot: a new engine when the registry changed,
// and always a fleet compiled by the snapshot's engine.
func (s *Service) rebuild(registryChanged bool) {
	cur := s.snap.Load()
	next := &snapshot{}
	if cur != nil {
		next.engine, next.applied = cur.engine, cur.applied
	}
	if registryChanged {
		eng, applied, err := s.reg.build()
		switch {
		case eng != nil && err != nil:
			s.log.Warn().Err(err).Msg("registry snapshot is invalid; serving the last valid catalog with the current config")
		case err != nil && next.engine != nil:
			s.log.Warn().Err(err).Msg("registry snapshot is invalid; keeping the previous one")
		case err != nil:
			s.log.Error().Err(err).Msg("registry is empty or invalid; answering 503 until it is fixed")
		}
		if eng != nil {
			next.engine, next.applied = eng, applied
			cat := eng.Catalog()
			cfg := eng.Config()
			s.log.Info().Int("models", len(cat.Models)).Int("categories", len(cat.Categories)).
				Bool("gpu_aware", cfg.GPUAware).Bool("multi_category", cfg.MultiCategory).
				Bool("benchmark_scoring", cfg.BenchmarkScoring).Msg("registry snapshot loaded")
		}
	}
	samples, version := s.cache.Samples()
	next.telemetryVersion = version
	if next.engine != nil {
		next.fleet = next.engine.NewFleet(samples, s.ledger)
	}
	s.snap.Store(next)
}

// watchBucket applies a bucket's current values, signals warm, then keeps
// applying changes until ctx is done.
func (s *Service) watchBucket(ctx context.Context, bucket string, apply func(string, []byte) error, warmed func()) {
	kv, err := s.js.KeyValue(ctx, bucket)
	if err != nil {
		s.log.Error().Err(err).Str("bucket", bucket).Msg("open bucket")
		return
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		s.log.Error().Err(err).Str("bucket", bucket).Msg("watch bucket")
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				warmed()
				continue
			}
			var value []byte
			if e.Operation() == jetstream.KeyValuePut {
				value = e.Value()
			}
			err := apply(e.Key(), value)
			s.reg.read(bucket, e.Revision())
			if err != nil {
				s.log.Warn().Err(err).Str("bucket", bucket).Str("key", e.Key()).Msg("ignoring an invalid value; keeping the previous one")
				continue
			}
			select {
			case s.catalogChanged <- struct{}{}:
			default:
			}
		}
	}
}

// consumeTelemetry reads the last sample per GPU subject, then live ones.
func (s *Service) consumeTelemetry(ctx context.Context, warmed func()) (jetstream.ConsumeContext, error) {
	stream, err := s.js.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		return nil, fmt.Errorf("%w: telemetry stream %s: %w", ErrWarmup, bus.TelemetryStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: telemetry stream %s: %w", ErrWarmup, bus.TelemetryStream, err)
	}
	if info.State.Msgs == 0 {
		warmed()
	}
	cons, err := s.js.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.TelemetryWildcard},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: telemetry consumer: %w", ErrWarmup, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var sample telemetry.Sample
		if err := json.Unmarshal(msg.Data(), &sample); err != nil {
			s.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("ignoring undecodable GPU sample")
		} else if err := checkSample(msg.Subject(), &sample, s.now()); err != nil {
			s.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("ignoring GPU sample")
		} else if s.cache.Put(sample) {
			s.ledgerMu.Lock()
			s.ledger.Observe(sample.Key(), sample.Timestamp)
			s.ledgerMu.Unlock()
		}
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			warmed()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: telemetry consumer: %w", ErrWarmup, err)
	}
	return cc, nil
}

// maxSampleSkew bounds how far ahead of this selector's clock a sample may
// be dated: a later-dated one would hide every correct sample of its GPU
// (the cache keeps the newest) and look fresh all that time.
const maxSampleSkew = time.Minute

// checkSample refuses a sample that is not its own GPU's (agents may publish
// only their host's subjects, so the subject vouches for the body) or that
// is dated too far ahead.
func checkSample(subject string, sample *telemetry.Sample, now time.Time) error {
	if want := bus.TelemetrySubject(sample.Host, sample.Index); subject != want {
		return fmt.Errorf("%w: a sample of %s arrived on %s, want %s", ErrBadSample, sample.Key(), subject, want)
	}
	if ahead := sample.Timestamp.Sub(now); ahead > maxSampleSkew {
		return fmt.Errorf("%w: the sample of %s is dated %s ahead of this selector's clock (at most %s)",
			ErrBadSample, sample.Key(), ahead.Round(time.Second), maxSampleSkew)
	}
	return nil
}

// handle answers one selection request and records its outcome.
func (s *Service) handle(req micro.Request) {
	start := time.Now()
	s.handling.RLock()
	defer s.handling.RUnlock()
	defer s.recoverRequest(req)
	if s.stopping {
		s.fail(req, labels{}, bus.CodeNotReady, fmt.Errorf("%w: shutting down", ErrNotReady), nil)
		return
	}
	l := s.answer(req, start)
	s.metrics.observe(start, l.category, l.model, l.mode, l.outcome)
}

// recoverRequest answers 500 for a request whose handling panicked, and
// logs the stack, as bus.Guard does for the other services; a deferred
// recover here keeps the request path free of Guard's closure allocation.
func (s *Service) recoverRequest(req micro.Request) {
	p := recover()
	if p == nil {
		return
	}
	s.log.Error().Str("endpoint", bus.SelectSubject).Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("request panicked; answered 500")
	s.fail(req, labels{}, bus.CodeInternal, fmt.Errorf("%w: %s failed on this request (the service's log has the details)", bus.ErrPanic, bus.SelectSubject), nil)
}

// labels describe an answered request for the decisions metric. Requests
// refused before their category is known to exist carry no category, so
// arbitrary request strings cannot grow the metric's series.
type labels struct{ category, model, mode, outcome string }

// answer replies to one request. Nothing here waits on NATS: the reply is
// sent first, the event and the reservation are queued.
func (s *Service) answer(req micro.Request, start time.Time) labels {
	now := s.now()
	data := req.Data()
	if len(data) > s.cfg.MaxRequestBytes {
		return s.fail(req, labels{}, bus.CodeBadRequest, fmt.Errorf("%w: %d bytes, limit %d", ErrRequestTooLarge, len(data), s.cfg.MaxRequestBytes), nil)
	}
	r, err := decodeRequest(data)
	if err != nil {
		return s.fail(req, labels{}, bus.CodeBadRequest, err, nil)
	}
	snap := s.snap.Load()
	if snap == nil || snap.engine == nil {
		return s.fail(req, labels{}, bus.CodeNotReady, fmt.Errorf("%w: no valid registry loaded (import one with `orchestrator registry import`)", ErrNotReady), nil)
	}
	eventID := nuid.Next()
	res, reply, ev, err := s.decide(snap, &r, eventID, now, start)
	if err != nil {
		var nc *selection.NoCandidateError
		switch {
		case errors.Is(err, selection.ErrInvalidRequest):
			return s.fail(req, labels{}, bus.CodeBadRequest, err, nil)
		case errors.Is(err, selection.ErrUnknownCategory), errors.Is(err, selection.ErrUnknownModel):
			return s.fail(req, labels{}, bus.CodeNotFound, err, nil)
		case errors.As(err, &nc):
			return s.fail(req, labels{category: r.TaskCategory, mode: string(nc.Mode)}, bus.CodeUnprocessable, err, nc)
		default:
			return s.fail(req, labels{category: r.TaskCategory}, bus.CodeInternal, err, nil)
		}
	}
	l := labels{category: r.TaskCategory, model: res.Model.ID, mode: string(res.Mode), outcome: outcomeSelected}
	if res.Degraded {
		l.outcome = outcomeDegraded
	}
	buf := replyBuffers.Get().(*[]byte)
	defer replyBuffers.Put(buf)
	body, err := reply.AppendJSON((*buf)[:0])
	if err != nil {
		return s.fail(req, labels{category: r.TaskCategory}, bus.CodeInternal, err, nil)
	}
	*buf = body
	// Respond copies body into the connection's buffer before it returns.
	if err := req.Respond(body); err != nil {
		s.log.Warn().Err(err).Msg("send selection reply")
	}
	s.selections.Add(1)
	s.publishEvent(&ev)
	return l
}

// decodeRequest parses a request as encoding/json would, unknown fields
// refused, and refuses text after the object (JSON's four whitespace bytes
// excepted). Keys match field names up to ASCII case only: encoding/json
// would also take "taſk_category" (a Unicode fold) for task_category.
// segmentio's decoder saves 1.3 us and 7 allocations a request
// (BenchmarkAnswer); FuzzDecodeRequest holds it to encoding/json's answers.
func decodeRequest(data []byte) (selection.Request, error) {
	var r selection.Request
	rest, err := segjson.Parse(data, &r, segjson.DisallowUnknownFields)
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrMalformedRequest, err)
	}
	if rest = bytes.Trim(rest, " \t\r\n"); len(rest) > 0 {
		return r, fmt.Errorf("%w: %d bytes after the request object", ErrMalformedRequest, len(rest))
	}
	return r, nil
}

// replyBuffers recycles reply encodings: a reply is a kilobyte or two and
// there is one per request.
var replyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// decide selects and builds the reply and its event, and reserves the
// placement. The selection runs beside the other requests', reading each
// GPU's reservations once (the event records what it read, so replay and
// what-if see the decision's inputs); only the check and the reservation
// hold ledgerMu. When a parallel request changed the chosen GPU's
// reservations in between, the selection runs again with the ledger held,
// so no two placements share the same free memory. Holding the ledger for
// every whole decision had made the selections one at a time: 16 cores
// answered no faster than 4 (bench-nats mutex profile).
func (s *Service) decide(snap *snapshot, r *selection.Request, eventID string, now, start time.Time) (selection.Result, selection.Reply, events.SelectionEvent, error) {
	q := selection.Query{Request: *r, Now: now, Seed: rand.Uint64()}
	res, err := snap.engine.Select(q, snap.fleet)
	if err == nil && res.GPU != nil {
		res, err = s.place(snap, q, res, eventID)
	}
	if err != nil {
		return res, selection.Reply{}, events.SelectionEvent{}, err
	}
	reply := res.Reply(r, eventID, now, time.Since(start))
	ev := events.FromReply(r, &reply, &res, s.cfg.Instance, snap.fleet)
	return res, reply, ev, nil
}

// place reserves res's placement (when reservations are on), first making
// sure the chosen GPU's reservations are still those the selection saw.
func (s *Service) place(snap *snapshot, q selection.Query, res selection.Result, eventID string) (selection.Result, error) {
	ttl := snap.engine.Config().ReservationTTL()
	if ttl <= 0 {
		return res, nil
	}
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	if seen, _ := res.ReservedMB(res.GPU.Key); s.ledger.ReservedMB(res.GPU.Key, q.Now) != seen {
		s.reselections.Add(1)
		var err error
		if res, err = snap.engine.Select(q, snap.fleet); err != nil || res.GPU == nil {
			return res, err
		}
	}
	r := selection.Reservation{ID: eventID, GPUKey: res.GPU.Key, MemoryMB: res.Model.GPUMemoryMB, At: q.Now, Expires: q.Now.Add(ttl)}
	s.ledger.Reserve(r)
	if s.cfg.ShareReservations {
		s.sharer.add(r)
	}
	return res, nil
}

// errorReply is the JSON body of every error the selector returns.
type errorReply struct {
	bus.ErrorBody
	// NoCandidate counts, per filter, what was rejected (422 only).
	NoCandidate *selection.NoCandidateError `json:"no_candidate,omitempty"`
}

func (s *Service) fail(req micro.Request, l labels, code string, err error, nc *selection.NoCandidateError) labels {
	for i, c := range errorCodes {
		if c == code {
			s.errors[i].Add(1)
		}
	}
	msg := err.Error()
	body, _ := json.Marshal(errorReply{ErrorBody: bus.ErrorBody{Error: msg}, NoCandidate: nc})
	// The description travels in a header: keep it to one line.
	desc := strings.ReplaceAll(msg, "\n", "; ")
	if rerr := req.Error(code, desc, body); rerr != nil {
		s.log.Warn().Err(rerr).Msg("send selection error")
	}
	l.outcome = outcomeOfCode[code]
	return l
}

// Stats are the selector's counters, also served by `nats micro stats selector`.
type Stats struct {
	Selections uint64            `json:"selections"`
	Errors     map[string]uint64 `json:"errors"`
	// EventsSent went to the stream, acknowledged or not yet;
	// EventsPublished were acknowledged; EventsRetried counts messages of
	// events sent again (a message holds one event or more).
	EventsSent      uint64 `json:"events_sent"`
	EventsPublished uint64 `json:"events_published"`
	EventsRetried   uint64 `json:"events_retried"`
	EventsDropped   uint64 `json:"events_dropped"`
	EventsFailed    uint64 `json:"events_failed"`
	EventsBuffered  int    `json:"events_buffered"`
	// EventsBatched tells that events go out as fast-ingest batches (the
	// stream allows them), not one acknowledged publish each.
	EventsBatched bool `json:"events_batched"`
	// Reselections counts placements selected again because the chosen
	// GPU's reservations changed after the selection read them (a parallel
	// placement, another replica's, a newer sample, an expiry).
	Reselections uint64 `json:"reselections"`
	GPUs         int    `json:"gpus"`
	Models       int    `json:"models"`
	// AppliedRevisions is the newest revision of each registry bucket
	// (orch_models, orch_categories, orch_config) that this selector has
	// read and rebuilt its engine from: a write at or below it is live here.
	AppliedRevisions map[string]uint64 `json:"applied_revisions,omitempty"`
}

// Stats returns the current counters.
func (s *Service) Stats() Stats {
	ev := s.events.Stats()
	st := Stats{
		Selections: s.selections.Load(), Errors: map[string]uint64{},
		EventsSent: ev.Sent, EventsPublished: ev.Published, EventsRetried: ev.Retried,
		EventsDropped: ev.Dropped, EventsFailed: ev.Failed,
		EventsBuffered: ev.Buffered, EventsBatched: ev.Batched, Reselections: s.reselections.Load(),
	}
	for i, c := range errorCodes {
		if n := s.errors[i].Load(); n > 0 {
			st.Errors[c] = n
		}
	}
	if snap := s.snap.Load(); snap != nil && snap.engine != nil {
		st.GPUs = snap.fleet.Len()
		st.Models = len(snap.engine.Catalog().Models)
		st.AppliedRevisions = snap.applied
	}
	return st
}

// publishEvent encodes ev and queues it for the stream; it never blocks.
func (s *Service) publishEvent(ev *events.SelectionEvent) {
	// The message keeps its own buffer: a retry may resend it after the ack.
	data, err := ev.AppendJSON(make([]byte, 0, s.eventSizeHint.Load()))
	if err != nil { // a non-finite number or out-of-range time; counted, not hidden
		s.events.failed.Add(1)
		s.log.Error().Err(err).Str("event_id", ev.EventID).Msg("encode decision event")
		return
	}
	if n := int64(len(data)); n > s.eventSizeHint.Load() {
		s.eventSizeHint.Store(n)
	}
	msg := &nats.Msg{Subject: bus.SelectionEventSubject(ev.TaskCategory), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.EventID)
	s.events.Publish(msg)
}

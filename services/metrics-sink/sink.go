package metricssink

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Defaults of Config; a zero field in a Config given to New takes these.
const (
	// DefaultBatchSize: 4,096 rows per commit stored 15% more rows/s than
	// 1,024 (BenchmarkIngest): each commit also rewrites the index pages it
	// touched, whatever the batch's size.
	DefaultBatchSize   = 4096
	DefaultBatchWait   = 200 * time.Millisecond
	DefaultAckWait     = 30 * time.Second
	DefaultRetryMax    = 10 * time.Second
	DefaultLagInterval = 5 * time.Second
	DefaultRateWindow  = 10 * time.Second
	// DefaultRequestTimeout bounds one endpoint request's database work.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultStaleAfter is the selector's default: 3 x the 5 s sample interval.
	DefaultStaleAfter = 15 * time.Second
	// MaxBatchSize bounds one transaction and one pull request.
	MaxBatchSize = 10000
	// MaxSharedSinks is how many sinks (PostgreSQL) can share the durable
	// consumer without one waiting for another's acks: each holds up to
	// batchesPerSink batches unacknowledged, and the consumer's
	// MaxAckPending is room for all of theirs. With room for 4 batches, 8
	// sinks on 16 cores stored no more rows/s than 4 did.
	MaxSharedSinks = 10
	// batchesPerSink: one being fetched and decoded, one queued, one being
	// written.
	batchesPerSink = 3
	// errCodeMaxAckPendingExceeded is JetStream's "consumer max ack pending
	// exceeds system limit" (nats.go names no constant for it).
	errCodeMaxAckPendingExceeded jetstream.ErrorCode = 10121
	// retryMin is the first wait after a failed fetch or commit; it doubles
	// up to RetryMax.
	retryMin = 250 * time.Millisecond
)

// Config configures the metrics-sink (envconfig prefix SINK_; the embedded
// NATS settings read NATS_URL etc., SINK_NATS_URL first). The default tags
// are the defaults of the binary; for a Config built in Go, New gives a zero
// setting its Default* value where the sink needs one.
type Config struct {
	// DatabaseURL: a SQLite file ("sqlite:PATH" or a plain path) or a
	// postgres:// URL. Read by OpenStore; New takes the opened store.
	DatabaseURL string `envconfig:"DATABASE_URL" default:"data/selections.db"`
	// BatchSize is the most events written in one transaction.
	BatchSize int `envconfig:"BATCH_SIZE" default:"4096"`
	// BatchWait is the longest a pull waits to fill a batch.
	BatchWait time.Duration `envconfig:"BATCH_WAIT" default:"200ms"`
	// AckWait is how long JetStream waits for an ack before redelivering.
	AckWait time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	// RetryMax caps the wait between retries after a failed fetch or commit.
	RetryMax time.Duration `envconfig:"RETRY_MAX" default:"10s"`
	// LagInterval is how often the consumer's lag is read from the server.
	LagInterval time.Duration `envconfig:"LAG_INTERVAL" default:"5s"`
	// RateWindow is the window of Stats.IngestRate.
	RateWindow time.Duration `envconfig:"RATE_WINDOW" default:"10s"`
	// RequestTimeout bounds the database work of one endpoint request.
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"30s"`
	// Provision makes Run call bus.Provision first so a fresh NATS works; turn
	// it off for accounts that may not create streams (see `orchestrator provision`).
	Provision bool `envconfig:"PROVISION" default:"true"`
	// StatsInterval is how often Run logs Stats; 0 turns it off.
	StatsInterval time.Duration `envconfig:"STATS_INTERVAL" default:"1m"`
	// DrainTimeout bounds draining the NATS connection at shutdown (the
	// binary's; the all-in-one drains its own connection).
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"10s"`
	// StaleAfter marks a GPU stale on the dashboard when its latest sample
	// is older; keep it equal to the selector's stale_after.
	StaleAfter time.Duration `envconfig:"STALE_AFTER" default:"15s"`
	// MetricsAddr serves /metrics, /healthz, /readyz and the dashboard
	// (cmd/metrics-sink; the all-in-one mounts them on its own server).
	MetricsAddr string `envconfig:"METRICS_ADDR" default:":9103"`

	bus.ConnConfig
}

// Option tunes a Service.
type Option func(*Service)

// WithLogger sets the service's logger (default: zerolog's global logger);
// logging.New(ServiceName) names the service in every line.
func WithLogger(l zerolog.Logger) Option {
	return func(s *Service) { s.log = l }
}

// WithMetrics registers the sink's Prometheus collectors on reg (default: a
// private registry nobody scrapes).
func WithMetrics(reg prometheus.Registerer) Option {
	return func(s *Service) { s.registerer = reg }
}

// Service moves selection events from the durable consumer bus.SinkConsumer
// on bus.SelectionStream into a Store, and serves the dashboard.
type Service struct {
	cfg        Config
	js         jetstream.JetStream
	store      Store
	log        zerolog.Logger
	stats      statsBox
	fleet      fleet
	registerer prometheus.Registerer
	// consuming is true while Run holds the durable consumer.
	consuming atomic.Bool
	// fetchFailing is when the current run of failed fetches began (zero
	// after a good one), and its last error: Check reports a sink that
	// cannot read the stream.
	fetchFailing atomic.Pointer[fetchFailure]
}

// fetchFailure is a run of failed fetches: since when, and the last error.
type fetchFailure struct {
	since time.Time
	err   error
}

// fetchFailingFor is how long fetches may keep failing before the sink
// reports itself not ready: three waits between retries at their longest,
// enough for a NATS restart or a consumer's recreation.
func (s *Service) fetchFailingFor() time.Duration { return 3 * s.cfg.RetryMax }

// WithDefaults returns cfg with every zero setting set to its default, and
// an error wrapping ErrConfig for each setting that cannot work.
func (cfg Config) WithDefaults() (Config, error) {
	var errs []error
	negative := func(field string, v time.Duration) bool {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%w: %s %s is negative", ErrConfig, field, v))
		}
		return v < 0
	}
	def := func(field string, v *time.Duration, d time.Duration) {
		if !negative(field, *v) && *v == 0 {
			*v = d
		}
	}
	def("SINK_BATCH_WAIT", &cfg.BatchWait, DefaultBatchWait)
	def("SINK_ACK_WAIT", &cfg.AckWait, DefaultAckWait)
	def("SINK_RETRY_MAX", &cfg.RetryMax, DefaultRetryMax)
	def("SINK_LAG_INTERVAL", &cfg.LagInterval, DefaultLagInterval)
	def("SINK_RATE_WINDOW", &cfg.RateWindow, DefaultRateWindow)
	def("SINK_REQUEST_TIMEOUT", &cfg.RequestTimeout, DefaultRequestTimeout)
	def("SINK_STALE_AFTER", &cfg.StaleAfter, DefaultStaleAfter)
	// Zero is valid here: it turns the stats lines off, and DrainTimeout
	// serves the binary only, which takes its default tag.
	negative("SINK_STATS_INTERVAL", cfg.StatsInterval)
	negative("SINK_DRAIN_TIMEOUT", cfg.DrainTimeout)
	switch {
	case cfg.BatchSize == 0:
		cfg.BatchSize = DefaultBatchSize
	case cfg.BatchSize < 0 || cfg.BatchSize > MaxBatchSize:
		errs = append(errs, fmt.Errorf("%w: SINK_BATCH_SIZE %d is outside 1..%d", ErrConfig, cfg.BatchSize, MaxBatchSize))
	}
	if cfg.AckWait <= cfg.BatchWait {
		errs = append(errs, fmt.Errorf("%w: SINK_ACK_WAIT %s must exceed SINK_BATCH_WAIT %s", ErrConfig, cfg.AckWait, cfg.BatchWait))
	}
	return cfg, errors.Join(errs...)
}

// New checks cfg (zero fields take the defaults above) and returns a service
// that writes to store; it does not close store.
func New(cfg Config, js jetstream.JetStream, store Store, opts ...Option) (*Service, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: no JetStream", ErrConfig)
	}
	if store == nil {
		return nil, fmt.Errorf("%w: no store", ErrConfig)
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, js: js, store: store, log: log.Logger,
		fleet: fleet{cache: telemetry.NewCache(), state: TelemetryStarting}}
	for _, o := range opts {
		o(s)
	}
	s.stats.meter = newRateMeter(cfg.RateWindow, time.Now())
	if s.registerer == nil {
		s.registerer = prometheus.NewRegistry()
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	return s, nil
}

// Stats returns the current counters, ingest rate and consumer lag.
func (s *Service) Stats() Stats { return s.stats.snapshot(time.Now()) }

func (s *Service) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       bus.SinkConsumer,
		Description:   "metrics-sink: selection events into SQL, acked after commit",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: MaxSharedSinks * batchesPerSink * s.cfg.BatchSize,
	}
}

func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := s.consumerConfig()
	cons, err := s.js.CreateOrUpdateConsumer(ctx, bus.SelectionStream, cfg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMaxAckPendingExceeded {
		return nil, fmt.Errorf("%w: %s on stream %s: a server, account or stream limit is below the %d unacknowledged messages it asks for (%d sinks x %d batches x SINK_BATCH_SIZE %d): raise that limit or lower SINK_BATCH_SIZE: %w",
			ErrConsumer, bus.SinkConsumer, bus.SelectionStream, cfg.MaxAckPending, MaxSharedSinks, batchesPerSink, s.cfg.BatchSize, err)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) && !s.cfg.Provision {
		return nil, fmt.Errorf("%w: %s: stream %s does not exist: run `orchestrator provision` (or start the sink with SINK_PROVISION=true): %w",
			ErrConsumer, bus.SinkConsumer, bus.SelectionStream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s on stream %s: %w", ErrConsumer, bus.SinkConsumer, bus.SelectionStream, err)
	}
	return cons, nil
}

// Run consumes until ctx ends (then it finishes the batch in hand and
// returns nil) or the NATS connection is closed. Each batch is written in one
// transaction and its messages are acked only after the commit; a failed
// commit naks them with a delay and is retried with backoff.
//
// Alongside the consumer it serves the micro service ServiceName (the
// endpoints under SubjectPrefix), stopped when Run returns, reads the
// telemetry stream for the dashboard's GPU view, and logs Stats every
// StatsInterval. With Provision set it first creates the streams.
func (s *Service) Run(ctx context.Context) (err error) {
	if s.cfg.Provision {
		if perr := bus.Provision(ctx, s.js); perr != nil {
			return fmt.Errorf("%w (set SINK_PROVISION=false where the streams are provisioned elsewhere)", perr)
		}
	}
	cons, err := s.consumer(ctx)
	if err != nil {
		return err
	}
	s.warnOfOtherSQLiteSinks(cons)
	svc, err := s.startService(ctx)
	if err != nil {
		return err
	}
	// Ready (Check) once the server holds every endpoint's subscription.
	if err := s.js.Conn().FlushTimeout(s.cfg.RequestTimeout); err != nil {
		s.log.Warn().Err(err).Msg("flush after adding the endpoints")
	}
	s.consuming.Store(true)
	defer s.consuming.Store(false)
	defer func() {
		if serr := svc.Stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("%w: stop %s: %w", ErrService, ServiceName, serr))
		}
	}()
	if n, ok := s.store.(interface{ OpenNotes() []string }); ok {
		for _, note := range n.OpenNotes() {
			s.log.Warn().Msg(note)
		}
	}
	s.log.Info().Str("stream", bus.SelectionStream).Str("consumer", bus.SinkConsumer).
		Int("batch_size", s.cfg.BatchSize).Dur("batch_wait", s.cfg.BatchWait).
		Str("endpoints", SubjectPrefix+".>").Msg("metrics-sink consuming")

	var wg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(ctx)
	defer func() {
		stopBg()
		wg.Wait()
	}()
	var consMu sync.Mutex // cons is replaced when the consumer had to be recreated
	current := func() jetstream.Consumer {
		consMu.Lock()
		defer consMu.Unlock()
		return cons
	}
	wg.Go(func() { s.watchLag(bgCtx, current) })
	wg.Go(func() { s.watchTelemetry(bgCtx) })
	if s.cfg.StatsInterval > 0 {
		wg.Go(func() { s.logStats(bgCtx) })
	}

	// Fetching and decoding the next batch overlaps writing this one: on a
	// busy sink they take about as long as the write.
	batches := make(chan fetched, 1)
	recreate := func() {
		// A NATS server that lost its data (a new node, a wiped volume)
		// has neither the stream nor the consumer: with provisioning on,
		// make the streams again, but only when the decision stream is
		// gone (provisioning an existing one would reset settings given
		// by `orchestrator provision`, such as its max age).
		if s.cfg.Provision {
			if _, err := s.js.Stream(ctx, bus.SelectionStream); errors.Is(err, jetstream.ErrStreamNotFound) {
				if err := bus.Provision(ctx, s.js); err != nil && ctx.Err() == nil {
					s.log.Warn().Err(err).Msg("cannot provision the streams again")
				} else {
					s.log.Warn().Str("stream", bus.SelectionStream).Msg("the decision stream was gone (NATS lost its data?); provisioned it again with default settings")
				}
			}
		}
		c, err := s.consumer(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("cannot recreate consumer")
			}
			return
		}
		consMu.Lock()
		cons = c
		consMu.Unlock()
		s.log.Info().Str("consumer", bus.SinkConsumer).Msg("consumer recreated")
	}
	wg.Go(func() { s.fetchBatches(ctx, current, recreate, batches) })
	backoff := retryMin
	for b := range batches {
		if b.err != nil {
			return b.err
		}
		if err := s.write(ctx, b, backoff); err != nil {
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, s.cfg.RetryMax)
			continue
		}
		backoff = retryMin
	}
	s.log.Info().Interface("stats", s.Stats()).Msg("metrics-sink stopped")
	return nil
}

// warnOfOtherSQLiteSinks warns when a SQLite sink finds another sink
// already pulling from the consumer: each would store part of the
// decisions in its own file. A pull waiting before this sink's first is
// another's (best effort: one between two pulls goes unseen).
func (s *Service) warnOfOtherSQLiteSinks(cons jetstream.Consumer) {
	if _, ok := s.store.(*SQLiteStore); !ok {
		return
	}
	if info := cons.CachedInfo(); info != nil && info.NumWaiting > 0 {
		s.log.Warn().Int("waiting_pulls", info.NumWaiting).Str("consumer", bus.SinkConsumer).
			Msg("a pull already waits on the consumer: another sink reads the decisions (or one that just stopped); with SQLite each sink's file gets only part of them: run one SQLite sink, or share PostgreSQL among several")
	}
}

// fetch pulls up to size messages of up to maxBytes together, waiting at
// most wait for them: batches are cut by size and by time. It returns what
// arrived even with an error.
func fetch(cons jetstream.Consumer, size, maxBytes int, wait time.Duration) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(size, jetstream.FetchMaxBytes(maxBytes), jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batch.Error()
}

// fetched is one batch of storable records and the messages they came in,
// or the error that ends Run.
type fetched struct {
	recs []Record
	// from[i] indexes msgs: the message recs[i] came in.
	from []int
	// msgs holds the batch's messages with a storable event: each is
	// acknowledged once its events are stored.
	msgs []jetstream.Msg
	// poisoned[i] counts the events of msgs[i] that cannot be stored: they
	// count as poison once the message is acknowledged or terminated, not
	// when it is naked and comes back.
	poisoned []int
	// events and bytes count what the pull brought, storable or not.
	events, bytes int
	err           error
}

// firstBytesPerEvent sizes the first pull: a little above a typical event.
const firstBytesPerEvent = 4 << 10

// fetchBatches pulls and decodes batches into out until ctx ends or the
// connection closes, then closes out. A failed fetch is counted and retried
// with backoff; a consumer that disappeared is recreated.
//
// A message holds one event or, packed by the selector, up to
// events.MaxPerMessage, so a pull asks for BatchSize events' worth of
// messages and of bytes, at the events per message and the event size of
// the last pull (at first, as if every message were full); the bytes never
// below what the largest message needs. write commits at most BatchSize
// events per transaction.
func (s *Service) fetchBatches(ctx context.Context, cons func() jetstream.Consumer, recreate func(), out chan<- fetched) {
	defer close(out)
	backoff := retryMin
	bytesPerEvent, perMessage := firstBytesPerEvent, events.MaxPerMessage
	for ctx.Err() == nil {
		pulled := time.Now()
		msgs, ferr := fetch(cons(), max(1, s.cfg.BatchSize/perMessage), max(s.leastPullBytes(), s.cfg.BatchSize*bytesPerEvent), s.cfg.BatchWait)
		if ferr == nil && len(msgs) > 0 {
			// Cleared here, not after handing the batch on: a writer stuck
			// on the database is not a sink that cannot read.
			s.fetchFailing.Store(nil)
		}
		b := s.decode(msgs)
		if b.events > 0 {
			bytesPerEvent = max(1, b.bytes/b.events)
			perMessage = (b.events + len(msgs) - 1) / len(msgs)
		}
		if len(b.recs) > 0 {
			out <- b
		}
		if ferr == nil && len(msgs) == 0 && time.Since(pulled) < s.cfg.BatchWait/2 && ctx.Err() == nil {
			// An empty pull ends at BatchWait; one that ends at once was
			// refused (nats.go reports some refusals as no messages).
			ferr = fmt.Errorf("%w: a pull returned nothing at once", ErrConsumer)
		}
		if ferr == nil {
			s.fetchFailing.Store(nil) // an empty pull that waited its time is good too
			backoff = retryMin
			continue
		}
		if errors.Is(ferr, nats.ErrConnectionClosed) || errors.Is(ferr, jetstream.ErrConnectionClosed) {
			out <- fetched{err: fmt.Errorf("%w: %s: %w", ErrConsumer, bus.SinkConsumer, ferr)}
			return
		}
		s.stats.update(func(st *Stats, _ *rateMeter) { st.FetchErrors++ })
		since := time.Now()
		if f := s.fetchFailing.Load(); f != nil {
			since = f.since
		}
		s.fetchFailing.Store(&fetchFailure{since: since, err: ferr})
		s.log.Warn().Err(ferr).Dur("retry_in", backoff).Msg("fetch from consumer failed")
		// A pull to a consumer that is gone has no responders: after a NATS
		// server restarted without its data, that is all a fetch says.
		if errors.Is(ferr, jetstream.ErrConsumerNotFound) || errors.Is(ferr, jetstream.ErrConsumerDeleted) ||
			errors.Is(ferr, nats.ErrNoResponders) {
			recreate()
		}
		s.sleep(ctx, backoff)
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// leastPullBytes is the fewest bytes a pull may ask for: room for the
// largest message the server takes (its max_payload covers headers and
// data), or it refuses to deliver that message at all.
func (s *Service) leastPullBytes() int {
	limit := int(s.js.Conn().MaxPayload())
	if limit <= 0 {
		limit = maxServerPayload
	}
	return limit + 4<<10
}

// maxServerPayload is the largest max_payload a NATS server allows.
const maxServerPayload = 64 << 20

// decodeChunk is the fewest events one decoding goroutine takes: below
// it, starting one costs more than it saves.
const decodeChunk = 128

// decode turns fetched messages into records, on up to GOMAXPROCS
// goroutines: decoding and encoding event_json cost about what the writer
// spends on a row. Poison events are counted and left out; a message with
// no storable event is terminated. None holds the batch up.
func (s *Service) decode(msgs []jetstream.Msg) fetched {
	if len(msgs) == 0 {
		return fetched{}
	}
	// The last message delivered knows how many the stream holds beyond it.
	if meta, err := msgs[len(msgs)-1].Metadata(); err == nil {
		now := time.Now()
		s.stats.update(func(st *Stats, _ *rateMeter) { st.ConsumerLag, st.LagUpdated = meta.NumPending, now })
	}
	b := fetched{msgs: make([]jetstream.Msg, 0, len(msgs))}
	// Every event of the pull, with the message it came in, so that the
	// decoding splits by events, however they are packed.
	var lines [][]byte
	var lineFrom []int
	// bad[i] counts the events of msgs[i] that cannot be stored; an empty
	// message counts as one.
	bad := make([]int, len(msgs))
	for i, m := range msgs {
		b.bytes += len(m.Data())
		n := len(lines)
		for data := range events.Each(m.Data()) {
			lines = append(lines, data)
			lineFrom = append(lineFrom, i)
		}
		if len(lines) == n {
			s.logPoison(m, fmt.Errorf("%w: an empty message", ErrBadEvent))
			bad[i] = 1
		}
	}
	b.events = len(lines)
	recs := make([]Record, len(lines))
	errs := make([]error, len(lines))
	workers := max(1, min(runtime.GOMAXPROCS(0), (len(lines)+decodeChunk-1)/decodeChunk))
	per := max(1, (len(lines)+workers-1)/workers)
	var wg sync.WaitGroup
	for lo := 0; lo < len(lines); lo += per {
		hi := min(lo+per, len(lines))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				recs[i], errs[i] = decodeGuarded(lines[i], DecodeRecord)
			}
		})
	}
	wg.Wait()
	// kept[i]: the index in b.msgs of msgs[i], -1 while it has no storable event.
	kept := make([]int, len(msgs))
	for i := range kept {
		kept[i] = -1
	}
	for i := range lines {
		m := lineFrom[i]
		if errs[i] != nil {
			s.logPoison(msgs[m], errs[i])
			bad[m]++
			continue
		}
		if kept[m] < 0 {
			kept[m] = len(b.msgs)
			b.msgs = append(b.msgs, msgs[m])
		}
		b.recs = append(b.recs, recs[i])
		b.from = append(b.from, kept[m])
	}
	b.poisoned = make([]int, len(b.msgs))
	for i, m := range msgs {
		if kept[i] < 0 {
			s.countPoison(bad[i])
			s.terminate(m)
			continue
		}
		b.poisoned[kept[i]] = bad[i]
	}
	return b
}

// decodeGuarded runs decode on one event and turns a panic of the decoder
// into ErrBadEvent: the event is then poison, terminated, where a crash
// would come back with its redelivery, again and again.
func decodeGuarded(data []byte, decode func([]byte) (Record, error)) (rec Record, err error) {
	defer func() {
		if p := recover(); p != nil {
			rec, err = Record{}, fmt.Errorf("%w: the decoder failed on it: %v", ErrBadEvent, p)
		}
	}()
	return decode(data)
}

// write stores one batch, BatchSize events per transaction, and acks each
// message once the transaction with its last event committed (a message's
// events are consecutive in b.recs). An event the store refuses is counted
// as poison and the rest retried at once; a message left with no event is
// terminated. It returns an error only when the store failed, after naking
// the messages not yet acknowledged: the events of theirs committed before
// are skipped when they come back.
func (s *Service) write(ctx context.Context, b fetched, nakDelay time.Duration) error {
	// left[i]: the events of msgs[i] not refused; 0 once it was terminated.
	left := make([]int, len(b.msgs))
	for _, m := range b.from {
		left[m]++
	}
	// msgs[:done] are acknowledged or terminated.
	done := 0
	finish := func(until int) {
		for ; done < until; done++ {
			if left[done] == 0 {
				continue
			}
			s.countPoison(b.poisoned[done])
			// A lost ack only means a redelivery, which the store ignores.
			if err := b.msgs[done].Ack(); err != nil {
				s.log.Warn().Err(err).Msg("ack failed; the events will be redelivered and skipped")
			}
		}
	}
	for lo := 0; lo < len(b.recs); lo += s.cfg.BatchSize {
		hi := min(lo+s.cfg.BatchSize, len(b.recs))
		// These messages are ours until AckWait: finishing a transaction on
		// shutdown saves their redelivery, so it outlives ctx (bounded by
		// AckWait).
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.AckWait)
		err := s.commit(wctx, &b, lo, hi, left)
		cancel()
		if err != nil {
			s.log.Error().Err(err).Int("events", len(b.recs)-lo).Dur("redeliver_in", nakDelay).Msg("batch not stored; naked for redelivery")
			for i := done; i < len(b.msgs); i++ {
				if left[i] == 0 {
					continue
				}
				if err := b.msgs[i].NakWithDelay(nakDelay); err != nil {
					s.log.Warn().Err(err).Msg("nak failed; the message returns after ack wait")
				}
			}
			return err
		}
		// The messages before the next event's are stored whole (commit
		// reorders only inside lo..hi).
		if hi < len(b.recs) {
			finish(b.from[hi])
		}
	}
	finish(len(b.msgs))
	return nil
}

// commit inserts the events lo..hi of b in one transaction. An event the
// store refuses is poison, left out (see write for left), and the rest
// inserted again; b.recs[lo:hi] and b.from[lo:hi] are reordered.
func (s *Service) commit(ctx context.Context, b *fetched, lo, hi int, left []int) error {
	recs, from := b.recs[lo:hi], b.from[lo:hi]
	for len(recs) > 0 {
		n, err := s.store.Insert(ctx, recs)
		var re *RowError
		if errors.As(err, &re) && re.Index >= 0 && re.Index < len(recs) {
			m := from[re.Index]
			s.logPoison(b.msgs[m], err)
			b.poisoned[m]++
			recs = slices.Delete(recs, re.Index, re.Index+1)
			from = slices.Delete(from, re.Index, re.Index+1)
			if left[m]--; left[m] == 0 {
				s.countPoison(b.poisoned[m])
				s.terminate(b.msgs[m])
			}
			continue
		}
		if err != nil {
			s.stats.update(func(st *Stats, _ *rateMeter) { st.StoreErrors++ })
			return err
		}
		now := time.Now()
		s.stats.update(func(st *Stats, m *rateMeter) {
			st.Inserted += uint64(n)
			st.Duplicates += uint64(len(recs) - n)
			st.Batches++
			st.LastCommit = now
			m.add(now, uint64(n))
		})
		s.log.Debug().Int("inserted", n).Int("duplicates", len(recs)-n).Msg("batch committed")
		return nil
	}
	return nil
}

// logPoison logs an event of m that cannot be stored; it is counted by
// countPoison when m is acknowledged or terminated.
func (s *Service) logPoison(m jetstream.Msg, cause error) {
	ev := s.log.Error().Err(cause).Str("subject", m.Subject())
	if meta, err := m.Metadata(); err == nil {
		ev = ev.Uint64("stream_seq", meta.Sequence.Stream).Uint64("delivered", meta.NumDelivered)
	}
	ev.Msg("poison event skipped")
}

// countPoison counts n events skipped for good.
func (s *Service) countPoison(n int) {
	if n > 0 {
		s.stats.update(func(st *Stats, _ *rateMeter) { st.Poison += uint64(n) })
	}
}

// terminate ends a message with no storable event: it is never redelivered.
func (s *Service) terminate(m jetstream.Msg) {
	if err := m.TermWithReason("no storable selection-event"); err != nil {
		s.log.Warn().Err(err).Msg("term failed; the message returns after ack wait")
	}
}

// watchLag reads the consumer's pending counts every LagInterval, so the lag
// stays current while no batch arrives.
func (s *Service) watchLag(ctx context.Context, cons func() jetstream.Consumer) {
	t := time.NewTicker(s.cfg.LagInterval)
	defer t.Stop()
	for {
		info, err := cons().Info(ctx)
		switch {
		case err == nil:
			now := time.Now()
			s.stats.update(func(st *Stats, _ *rateMeter) {
				st.ConsumerLag, st.AckPending, st.LagUpdated = info.NumPending, uint64(max(info.NumAckPending, 0)), now
			})
		case ctx.Err() == nil:
			s.log.Warn().Err(err).Msg("cannot read consumer lag")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logStats logs the counters, ingest rate and lag every StatsInterval, for
// those who read logs rather than /metrics.
func (s *Service) logStats(ctx context.Context) {
	t := time.NewTicker(s.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st := s.Stats()
			s.log.Info().Uint64("inserted", st.Inserted).Uint64("duplicates", st.Duplicates).
				Uint64("poison", st.Poison).Uint64("store_errors", st.StoreErrors).
				Float64("ingest_rate", st.IngestRate).Uint64("consumer_lag", st.ConsumerLag).
				Uint64("ack_pending", st.AckPending).Msg("metrics-sink stats")
		}
	}
}

func (s *Service) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

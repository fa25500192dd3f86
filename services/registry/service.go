package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Micro service identity.
const (
	ServiceName    = "registry"
	ServiceVersion = "1.0.0"
	// QueueGroup is shared by registry replicas, so each request is served once.
	QueueGroup = "registry"
)

// maxWriteAttempts bounds the re-reads of a write that met a concurrent writer.
const maxWriteAttempts = 5

// Service owns the registry buckets and serves the registry API.
type Service struct {
	cfg        Config
	nc         *nats.Conn
	log        zerolog.Logger
	seed       *seedDocs
	seedConfig selection.Config

	st      *store
	started atomic.Bool
	ready   chan struct{}

	// mu serialises this process's writes: each reads, validates and writes
	// with no other write of its own in between; the lease in WriterKey does
	// so across processes.
	mu sync.Mutex
	// writer names this process in the write lease.
	writer string

	// counts holds the writes done and refused, by kind (see writeKinds).
	counts              map[string]*writeCounts
	failures, conflicts atomic.Uint64
	// modelCount and categoryCount are the keys in the catalog buckets, -1
	// until counted (see countKeys).
	modelCount, categoryCount atomic.Int64
	registerer                prometheus.Registerer
}

// Stats counts the write requests since the service started.
type Stats struct {
	// Writes succeeded (a write that changed nothing counts too).
	Writes uint64 `json:"writes"`
	// Rejections were refused: 400, 404 or 422.
	Rejections uint64 `json:"rejections"`
	// Failures could not be done: buckets unavailable, conflicts, bugs.
	Failures uint64 `json:"failures"`
	// Conflicts is how often a write found a key changed by another writer
	// and started over.
	Conflicts uint64 `json:"conflicts"`
}

// New checks cfg and reads and validates the seed files.
func New(cfg Config, nc *nats.Conn, opts ...Option) (*Service, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg.withDefaults(), nc: nc, log: log.Logger, ready: make(chan struct{}), counts: newWriteCounts(), writer: writerName()}
	s.modelCount.Store(-1)
	s.categoryCount.Store(-1)
	for _, o := range opts {
		o(s)
	}
	if err := s.loadSeeds(); err != nil {
		return nil, err
	}
	if err := s.register(); err != nil {
		return nil, err
	}
	return s, nil
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	st := Stats{Failures: s.failures.Load(), Conflicts: s.conflicts.Load()}
	for _, n := range s.counts {
		st.Writes += n.done.Load()
		for i := range n.rejected {
			st.Rejections += n.rejected[i].Load()
		}
	}
	return st
}

// Ready is closed once the endpoints serve requests.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Check is the readiness probe: nil once the endpoints serve requests.
func (s *Service) Check() error {
	select {
	case <-s.ready:
	default:
		return fmt.Errorf("%w: buckets and endpoints not set up yet", ErrNotReady)
	}
	if err := bus.Connected(s.nc); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}

// Run provisions the buckets (unless turned off), seeds empty ones, serves
// the API until ctx is done and then stops the micro service. It runs once.
func (s *Service) Run(ctx context.Context) error {
	if s.started.Swap(true) {
		return ErrRunning
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("%w: jetstream: %w", ErrUnavailable, err)
	}
	if s.cfg.Provision {
		var opts []bus.ProvisionOption
		if s.cfg.Replicas > 0 {
			opts = append(opts, bus.WithReplicas(s.cfg.Replicas))
		}
		if err := bus.Provision(ctx, js, opts...); err != nil {
			return fmt.Errorf("%w (set REGISTRY_PROVISION=false where the buckets are provisioned elsewhere)", err)
		}
	}
	if s.st, err = openStore(ctx, js); err != nil {
		return err
	}
	if err := s.seedBuckets(ctx); err != nil {
		return err
	}
	counting, stopCounting := context.WithCancel(ctx)
	var counters sync.WaitGroup
	defer counters.Wait()
	defer stopCounting()
	counters.Go(func() { s.countKeys(counting, s.st.models, &s.modelCount, "") })
	counters.Go(func() { s.countKeys(counting, s.st.categories, &s.categoryCount, BenchmarksKey) })
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "model registry: models, task categories, benchmark weights and the selection config",
		QueueGroup:  QueueGroup,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("registry endpoint error")
		},
	})
	if err != nil {
		return fmt.Errorf("add micro service %s: %w", ServiceName, err)
	}
	if err := s.addEndpoints(ctx, svc.AddGroup(bus.RegistrySubjectPrefix)); err != nil {
		return errors.Join(err, svc.Stop())
	}
	// Ready means reachable: the server must have the subscriptions.
	fctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	err = s.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return errors.Join(fmt.Errorf("flush endpoint subscriptions: %w", err), svc.Stop())
	}
	s.log.Info().Str("prefix", bus.RegistrySubjectPrefix).Msg("registry serving")
	close(s.ready)
	<-ctx.Done()
	if err := svc.Stop(); err != nil {
		return fmt.Errorf("stop micro service %s: %w", ServiceName, err)
	}
	return nil
}

// handlerFunc serves one endpoint: the request body in, the reply value out.
type handlerFunc func(ctx context.Context, body []byte) (any, error)

type endpoint struct {
	name, subject string
	// kind is the write kind of a write endpoint, "" for a read.
	kind   string
	handle handlerFunc
}

func (s *Service) endpoints() []endpoint {
	return []endpoint{
		{"models-list", "models.list", "", s.listModels},
		{"models-get", "models.get", "", s.getModel},
		{"models-put", "models.put", kindModelPut, s.putModel},
		{"models-delete", "models.delete", kindModelDelete, s.deleteModel},
		{"categories-list", "categories.list", "", s.listCategories},
		{"categories-get", "categories.get", "", s.getCategory},
		{"categories-put", "categories.put", kindCategoryPut, s.putCategory},
		{"categories-delete", "categories.delete", kindCategoryDelete, s.deleteCategory},
		{"benchmarks-list", "benchmarks.list", "", s.listBenchmarks},
		{"weights-set", "weights.set", kindWeightSet, s.setWeight},
		{"config-get", "config.get", "", s.getConfig},
		{"config-put", "config.put", kindConfigPut, s.putConfig},
		{"config-patch", "config.patch", kindConfigPatch, s.patchConfig},
		{"import", "import", kindImport, s.importRegistry},
		{"export", "export", "", s.exportRegistry},
	}
}

func (s *Service) addEndpoints(ctx context.Context, g micro.Group) error {
	for _, ep := range s.endpoints() {
		h := micro.ContextHandler(ctx, func(ctx context.Context, req micro.Request) { s.serve(ctx, ep, req) })
		if err := g.AddEndpoint(ep.name, h, micro.WithEndpointSubject(ep.subject)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", ep.name, err)
		}
	}
	return nil
}

// serve runs one request with the request timeout and replies.
func (s *Service) serve(ctx context.Context, ep endpoint, req micro.Request) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := bus.Guard(s.log, ep.name, func() (any, error) { return ep.handle(ctx, req.Data()) })
	counts := s.counts[ep.kind] // nil for a read
	if err == nil {
		if counts != nil {
			counts.done.Add(1)
		}
		if rErr := req.RespondJSON(res); rErr != nil {
			s.log.Error().Err(rErr).Str("endpoint", ep.name).Msg("cannot send reply")
		}
		return
	}
	code := codeOf(err)
	refused := slices.Index(rejectionCodes[:], code)
	ev := s.log.Error()
	switch {
	case refused >= 0 && counts != nil:
		counts.rejected[refused].Add(1)
		ev = s.log.Info()
	case refused >= 0:
		ev = s.log.Debug()
	case counts != nil:
		s.failures.Add(1)
	}
	ev.Err(err).Str("endpoint", ep.name).Str("code", code).Msg("request refused")
	if rErr := respondError(req, err); rErr != nil {
		s.log.Error().Err(rErr).Str("endpoint", ep.name).Msg("cannot send error reply")
	}
}

// write runs plan (read, validate, decide the key writes) and applies its
// ops. A write that plans nothing, or is refused, touches no bucket. One
// that writes plans again holding this process's lock and the lease of
// WriterKey (shared with other registry processes), so that it validates
// against what no other writer is changing. When a key changed in between
// anyway (a writer ignoring the lease) it starts over from a fresh read, up
// to maxWriteAttempts times. It returns the new revision of each op.
func (s *Service) write(ctx context.Context, what string, plan func(ctx context.Context) ([]op, error)) ([]uint64, error) {
	deadline, ok := ctx.Deadline()
	if !ok { // seeding at start: bounded like a request
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ops, err := plan(ctx); err != nil || len(ops) == 0 {
		return nil, err
	}
	release, err := s.st.lockWrites(ctx, s.writer, deadline)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer release()
	for attempt := 1; ; attempt++ {
		ops, err := plan(ctx)
		if err != nil {
			return nil, err
		}
		revs, err := apply(ctx, ops)
		if !errors.Is(err, errConflict) {
			if err == nil && len(ops) > 0 {
				s.log.Info().Str("write", what).Int("keys", len(ops)).Msg("registry updated")
			}
			return revs, err
		}
		s.conflicts.Add(1)
		if attempt == maxWriteAttempts {
			return nil, fmt.Errorf("%w: %s: other writers changed the registry %d times in a row; try again: %w",
				ErrConflict, what, attempt, err)
		}
		s.log.Warn().Err(err).Str("write", what).Int("attempt", attempt).Msg("concurrent write: starting over")
	}
}

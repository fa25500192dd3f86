package bus_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// deployConfig is the server configuration of deployments. The test runs it
// as it is, overriding only the listen address and the JetStream store dir.
const deployConfig = "../../deploy/nats/orchestrator.conf"

// deployUsers are the users of deploy/nats/accounts.conf, which holds only
// bcrypt hashes of their test passwords (testPassword).
var deployUsers = []string{"admin", "analyst", "metrics-sink", "nflow", "registry", "selector", "telemetry-gpu-node-1"}

// testPassword is the plain test password behind a deploy user's hash.
func testPassword(user string) string { return user + "-secret" }

// Micro service names and queue groups of services/selector, services/registry
// and services/metrics-sink: the permissions are written for these.
const (
	selectorService = "selector"
	registryService = "registry"
	registryQueue   = "registry"
	sinkService     = "metrics-sink"
	sinkQueue       = "metrics-sink"
	sinkPrefix      = bus.Prefix + ".sink"
	// sinkAckWait is the AckWait the metrics-sink gives its durable.
	sinkAckWait = 30 * time.Second
	// deployWait bounds every wait for the server; reached only on failure.
	deployWait = 10 * time.Second
)

// serverLog keeps the errors a server logs; permission violations are among them.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverLog) add(format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *serverLog) Errorf(format string, v ...any) { l.add(format, v) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add(format, v) }
func (*serverLog) Noticef(string, ...any)           {}
func (*serverLog) Warnf(string, ...any)             {}
func (*serverLog) Debugf(string, ...any)            {}
func (*serverLog) Tracef(string, ...any)            {}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// violationRe reads the connection name (set by bus.Connect, after the
// client's "v<version>:go:") and the subject of a logged violation.
var violationRe = regexp.MustCompile(`:go:([^"]*)".* Violation - (?:Subject|Reply) "([^"]*)"`)

type violation struct{ conn, subject string }

// violations returns the permission violations the server logged.
func (l *serverLog) violations() []violation {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []violation
	for _, line := range l.lines {
		if m := violationRe.FindStringSubmatch(line); m != nil {
			out = append(out, violation{conn: m[1], subject: m[2]})
		}
	}
	return out
}

// deployEnv is a server started from deployConfig with an admin connection.
type deployEnv struct {
	s     *server.Server
	opts  *server.Options
	log   *serverLog
	admin *roleConn
}

func startDeployServer(t *testing.T) *deployEnv {
	t.Helper()
	opts, err := server.ProcessConfigFile(deployConfig)
	if err != nil {
		t.Fatalf("%s: %v", deployConfig, err)
	}
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true // the test process owns signals
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("server from %s: %v", deployConfig, err)
	}
	log := &serverLog{}
	s.SetLoggerV2(log, false, false, false)
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(deployWait) {
		t.Fatalf("server from %s not ready; it logged:\n%s", deployConfig, log)
	}
	if !s.JetStreamEnabled() {
		t.Fatalf("%s does not enable JetStream", deployConfig)
	}
	return &deployEnv{s: s, opts: opts, log: log}
}

// roleConn is one connection as a deploy user; errs receives its async
// errors, where the server's permission violations arrive.
type roleConn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func (e *deployEnv) dial(ctx context.Context, user, password, name string) (*roleConn, error) {
	errs := make(chan error, 16)
	nop := zerolog.Nop()
	cfg := bus.ConnConfig{URL: e.s.ClientURL(), User: user, Password: password, Logger: &nop}
	nc, err := bus.Connect(ctx, cfg, name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &roleConn{nc: nc, js: js, errs: errs}, nil
}

// connect opens a connection as user with its test password, closed when
// the test ends. name shows in the server's log lines.
func (e *deployEnv) connect(t *testing.T, user, name string) *roleConn {
	t.Helper()
	c, err := e.dial(testCtx(t), user, testPassword(user), name)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(c.nc.Close)
	return c
}

// publishCore publishes without an ack and returns the error the server
// sent for it, if any.
func publishCore(c *roleConn, subject string, data []byte) error {
	if err := c.nc.Publish(subject, data); err != nil {
		return err
	}
	return serverError(c)
}

// serverError returns the last error the server sent on c: one sent for
// anything c did before has arrived once Flush returns.
func serverError(c *roleConn) error {
	if err := c.nc.Flush(); err != nil {
		return err
	}
	return c.nc.LastError()
}

// lastMsg is what the admin reads as the last message on subject in stream.
func (e *deployEnv) lastMsg(t *testing.T, stream, subject string) (*jetstream.RawStreamMsg, error) {
	t.Helper()
	ctx := testCtx(t)
	st, err := e.admin.js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("admin: stream %s: %v", stream, err)
	}
	return st.GetLastMsgForSubject(ctx, subject)
}

// waitMsg waits until stream holds a message on subject and returns the last one.
func (e *deployEnv) waitMsg(t *testing.T, stream, subject string) jetstream.Msg {
	t.Helper()
	ctx := testCtx(t)
	cons, err := e.admin.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		t.Fatalf("admin: consumer on %s: %v", stream, err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(deployWait))
	if err != nil {
		t.Fatalf("no message on %s in %s: %v", subject, stream, err)
	}
	return msg
}

// adminKV opens bucket as the admin.
func (e *deployEnv) adminKV(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := e.admin.js.KeyValue(testCtx(t), bucket)
	if err != nil {
		t.Fatalf("admin: bucket %s: %v", bucket, err)
	}
	return kv
}

// sinkInfo is the admin's view of the metrics-sink durable.
func (e *deployEnv) sinkInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := testCtx(t)
	cons, err := e.admin.js.Consumer(ctx, bus.SelectionStream, bus.SinkConsumer)
	if err != nil {
		t.Fatalf("admin: consumer %s: %v", bus.SinkConsumer, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("admin: consumer %s: %v", bus.SinkConsumer, err)
	}
	return info
}

// sinkConsumerConfig is the durable the metrics-sink creates.
func sinkConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       bus.SinkConsumer,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       sinkAckWait,
		MaxAckPending: 1024,
	}
}

// echo answers a micro request with "<service>:<subject>".
func echo(service string) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		_ = r.Respond([]byte(service + ":" + r.Subject()))
	})
}

// startResponders runs the micro services of the selector, the registry and
// the metrics-sink, each on a connection of its own user, as the services do.
func (e *deployEnv) startResponders(t *testing.T, sel, reg, sink *roleConn) {
	t.Helper()
	add := func(nc *nats.Conn, cfg micro.Config) micro.Service {
		t.Helper()
		svc, err := micro.AddService(nc, cfg)
		if err != nil {
			t.Fatalf("micro service %s: %v", cfg.Name, err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		return svc
	}
	add(sel.nc, micro.Config{
		Name: selectorService, Version: "1.0.0", QueueGroup: bus.SelectQueueGroup,
		Endpoint: &micro.EndpointConfig{Subject: bus.SelectSubject, Handler: echo(selectorService)},
	})
	regSvc := add(reg.nc, micro.Config{Name: registryService, Version: "1.0.0", QueueGroup: registryQueue})
	for _, ep := range []string{"models.list", "models.put"} {
		err := regSvc.AddGroup(bus.RegistrySubjectPrefix).AddEndpoint(strings.ReplaceAll(ep, ".", "-"), echo(registryService), micro.WithEndpointSubject(ep))
		if err != nil {
			t.Fatalf("registry endpoint %s: %v", ep, err)
		}
	}
	sinkSvc := add(sink.nc, micro.Config{Name: sinkService, Version: "1.0.0", QueueGroup: sinkQueue})
	if err := sinkSvc.AddGroup(sinkPrefix).AddEndpoint("reports-run", echo(sinkService), micro.WithEndpointSubject("reports.run")); err != nil {
		t.Fatalf("sink endpoint: %v", err)
	}
	for _, c := range []*roleConn{sel, reg, sink} {
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// seed provisions the server as the admin and stores what the checks read,
// each with the role that writes it in a deployment.
func (e *deployEnv) seed(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	e.admin = e.connect(t, "admin", "setup:admin")
	if err := bus.Provision(ctx, e.admin.js); err != nil {
		t.Fatalf("admin cannot provision: %v", err)
	}

	reg := e.connect(t, "registry", "setup:registry")
	for _, bucket := range []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket} {
		kv, err := reg.js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("registry: bucket %s: %v", bucket, err)
		}
		if _, err := kv.Put(ctx, "seed", []byte(`{"seed":true}`)); err != nil {
			t.Fatalf("registry: put seed in %s: %v", bucket, err)
		}
	}

	agent := e.connect(t, "telemetry-gpu-node-1", "setup:telemetry")
	if err := publishCore(agent, bus.TelemetrySubject("gpu-node-1", 0), []byte(`{"seed":true}`)); err != nil {
		t.Fatalf("telemetry agent: %v", err)
	}
	e.waitMsg(t, bus.TelemetryStream, bus.TelemetrySubject("gpu-node-1", 0))

	sel := e.connect(t, "selector", "setup:selector")
	if _, err := sel.js.Publish(ctx, bus.SelectionEventSubject("seed"), []byte(`{"seed":true}`)); err != nil {
		t.Fatalf("selector: seed event: %v", err)
	}

	sink := e.connect(t, "metrics-sink", "setup:metrics-sink")
	if _, err := sink.js.CreateOrUpdateConsumer(ctx, bus.SelectionStream, sinkConsumerConfig()); err != nil {
		t.Fatalf("metrics-sink: durable: %v", err)
	}
	e.startResponders(t, sel, reg, sink)
}

// permCheck is one thing a role does. With denied empty, act must succeed
// without any permission error. Otherwise the server must refuse denied
// (the connection gets the violation) and act must fail. prepare runs
// first; verify then checks, as the admin, what the action did or did not
// change.
type permCheck struct {
	name    string
	user    string
	denied  string
	prepare func(t *testing.T)
	act     func(ctx context.Context, c *roleConn) error
	verify  func(t *testing.T)
}

func (e *deployEnv) run(t *testing.T, pc permCheck) {
	t.Helper()
	c := e.connect(t, pc.user, "check:"+pc.name)
	if pc.prepare != nil {
		pc.prepare(t)
	}
	if pc.denied == "" {
		if err := pc.act(testCtx(t), c); err != nil {
			t.Fatalf("%s: %v", pc.user, err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := c.nc.LastError(); err != nil {
			t.Fatalf("%s: server error: %v", pc.user, err)
		}
	} else {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- pc.act(ctx, c) }()
		want := strconv.Quote(pc.denied)
		timeout := time.NewTimer(deployWait)
		defer timeout.Stop()
	wait:
		for {
			select {
			case err := <-c.errs:
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
					break wait
				}
				t.Logf("%s: other async error: %v", pc.user, err)
			case <-timeout.C:
				t.Fatalf("%s: no permission violation for %s: the server allowed it", pc.user, want)
			}
		}
		// A refused publish gets no reply: stop what waits for one.
		cancel()
		if err := <-done; err == nil {
			t.Fatalf("%s: action on %s succeeded although the server refused it", pc.user, want)
		}
	}
	if pc.verify != nil {
		pc.verify(t)
	}
}

// request sends a core request and checks the reply.
func request(ctx context.Context, c *roleConn, subject, want string) error {
	msg, err := c.nc.RequestWithContext(ctx, subject, []byte(`{}`))
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if string(msg.Data) != want {
		return fmt.Errorf("request %s: reply %q, want %q", subject, msg.Data, want)
	}
	return nil
}

// readOrdered reads the first message of stream matching filter with an
// ordered consumer, as the selector and the CLI's event readers do.
func readOrdered(ctx context.Context, c *roleConn, stream, filter string, policy jetstream.DeliverPolicy) (jetstream.Msg, error) {
	st, err := c.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	if _, err := st.Info(ctx); err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	cons, err := c.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  policy,
	})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", stream, err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(deployWait))
	if err != nil {
		return nil, fmt.Errorf("next on %s: %w", stream, err)
	}
	return msg, nil
}

func TestDeployAccounts(t *testing.T) {
	e := startDeployServer(t)
	e.seed(t)

	noMsg := func(stream, subject string) func(t *testing.T) {
		return func(t *testing.T) {
			if _, err := e.lastMsg(t, stream, subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatalf("%s holds a message on %s (err = %v)", stream, subject, err)
			}
		}
	}
	noModel := func(key string) func(t *testing.T) {
		return func(t *testing.T) {
			if _, err := e.adminKV(t, bus.ModelsBucket).Get(testCtx(t), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("%s/%s was written (err = %v)", bus.ModelsBucket, key, err)
			}
		}
	}
	const forgedEvent = "orch.events.selection.code"
	buckets := []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket}
	var sinkDelivered uint64 // the sink durable's deliveries before the analyst tries to pull

	checks := []permCheck{
		// Telemetry agent.
		{
			name: "telemetry agent publishes its own host's samples", user: "telemetry-gpu-node-1",
			act: func(_ context.Context, c *roleConn) error {
				return publishCore(c, bus.TelemetrySubject("gpu-node-1", 3), []byte(`{"gpu":3}`))
			},
			verify: func(t *testing.T) {
				if msg := e.waitMsg(t, bus.TelemetryStream, bus.TelemetrySubject("gpu-node-1", 3)); string(msg.Data()) != `{"gpu":3}` {
					t.Fatalf("stored sample %q", msg.Data())
				}
			},
		},
		{
			name: "telemetry agent cannot publish another host's samples", user: "telemetry-gpu-node-1",
			denied: bus.TelemetrySubject("other-host", 0),
			act: func(_ context.Context, c *roleConn) error {
				return publishCore(c, bus.TelemetrySubject("other-host", 0), []byte(`{}`))
			},
			verify: noMsg(bus.TelemetryStream, bus.TelemetrySubject("other-host", 0)),
		},
		{
			// kv.Put is this publish; the agent cannot even open the bucket.
			name: "telemetry agent cannot write a model", user: "telemetry-gpu-node-1",
			denied: "$KV." + bus.ModelsBucket + ".agent-model",
			act: func(_ context.Context, c *roleConn) error {
				return publishCore(c, "$KV."+bus.ModelsBucket+".agent-model", []byte(`{}`))
			},
			verify: noModel("agent-model"),
		},
		{
			name: "telemetry agent cannot subscribe", user: "telemetry-gpu-node-1",
			denied: bus.TelemetryWildcard,
			act: func(_ context.Context, c *roleConn) error {
				if _, err := c.nc.SubscribeSync(bus.TelemetryWildcard); err != nil {
					return err
				}
				return serverError(c)
			},
		},

		// nFlow.
		{
			name: "nflow requests orch.select, the selector answers", user: "nflow",
			act: func(ctx context.Context, c *roleConn) error {
				return request(ctx, c, bus.SelectSubject, selectorService+":"+bus.SelectSubject)
			},
		},
		{
			name: "nflow cannot publish telemetry", user: "nflow",
			denied: bus.TelemetrySubject("x", 0),
			act: func(_ context.Context, c *roleConn) error {
				return publishCore(c, bus.TelemetrySubject("x", 0), []byte(`{}`))
			},
			verify: noMsg(bus.TelemetryStream, bus.TelemetrySubject("x", 0)),
		},
		{
			name: "nflow cannot read a bucket", user: "nflow",
			denied: "$JS.API.STREAM.INFO.KV_" + bus.ModelsBucket,
			act: func(ctx context.Context, c *roleConn) error {
				_, err := c.js.KeyValue(ctx, bus.ModelsBucket)
				return err
			},
		},

		// Selector.
		{
			name: "selector watches and reads the three buckets", user: "selector",
			act: func(ctx context.Context, c *roleConn) error {
				for _, bucket := range buckets {
					kv, err := c.js.KeyValue(ctx, bucket)
					if err != nil {
						return fmt.Errorf("bucket %s: %w", bucket, err)
					}
					w, err := kv.WatchAll(ctx)
					if err != nil {
						return fmt.Errorf("watch %s: %w", bucket, err)
					}
					var keys []string
					for entry := range w.Updates() {
						if entry == nil {
							break
						}
						keys = append(keys, entry.Key())
					}
					if err := w.Stop(); err != nil {
						return fmt.Errorf("stop watching %s: %w", bucket, err)
					}
					if !slices.Contains(keys, "seed") {
						return fmt.Errorf("watch %s: keys %v lack seed", bucket, keys)
					}
					if _, err := kv.Get(ctx, "seed"); err != nil {
						return fmt.Errorf("get %s/seed: %w", bucket, err)
					}
				}
				return nil
			},
		},
		{
			name: "selector reads the telemetry stream with an ordered consumer", user: "selector",
			act: func(ctx context.Context, c *roleConn) error {
				msg, err := readOrdered(ctx, c, bus.TelemetryStream, bus.TelemetryWildcard, jetstream.DeliverLastPerSubjectPolicy)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(msg.Subject(), bus.TelemetrySubjectPrefix+"gpu-node-1.") {
					return fmt.Errorf("got a sample on %s", msg.Subject())
				}
				return nil
			},
		},
		{
			name: "selector publishes a decision event with a JetStream ack", user: "selector",
			act: func(ctx context.Context, c *roleConn) error {
				msg := &nats.Msg{Subject: bus.SelectionEventSubject("chat"), Data: []byte(`{"event":"chat"}`), Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, "perm-test-chat")
				fut, err := c.js.PublishMsgAsync(msg)
				if err != nil {
					return err
				}
				select {
				case ack := <-fut.Ok():
					if ack.Stream != bus.SelectionStream {
						return fmt.Errorf("acked by stream %s", ack.Stream)
					}
					return nil
				case err := <-fut.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			},
			verify: func(t *testing.T) {
				msg, err := e.lastMsg(t, bus.SelectionStream, bus.SelectionEventSubject("chat"))
				if err != nil || string(msg.Data) != `{"event":"chat"}` {
					t.Fatalf("stored event %v, err %v", msg, err)
				}
			},
		},
		{
			name: "selector publishes decision events in a fast-ingest batch", user: "selector",
			act: func(ctx context.Context, c *roleConn) error {
				st, err := c.js.Stream(ctx, bus.SelectionStream)
				if err != nil {
					return err
				}
				if !st.CachedInfo().Config.AllowBatchPublish {
					return fmt.Errorf("stream %s does not allow batched publishing", bus.SelectionStream)
				}
				fp, err := jetstreamext.NewFastPublisher(c.js)
				if err != nil {
					return err
				}
				for _, id := range []string{"perm-test-batch-1", "perm-test-batch-2"} {
					msg := &nats.Msg{Subject: bus.SelectionEventSubject("batch"), Data: []byte(`{"event":"` + id + `"}`), Header: nats.Header{}}
					msg.Header.Set(jetstream.MsgIDHeader, id)
					if _, err := fp.AddMsg(msg); err != nil {
						return err
					}
				}
				ack, err := fp.Close(ctx)
				if err != nil {
					return err
				}
				if ack.Stream != bus.SelectionStream || ack.BatchSize != 2 {
					return fmt.Errorf("batch acknowledged as %+v", ack)
				}
				return nil
			},
			verify: func(t *testing.T) {
				msg, err := e.lastMsg(t, bus.SelectionStream, bus.SelectionEventSubject("batch"))
				if err != nil || string(msg.Data) != `{"event":"perm-test-batch-2"}` {
					t.Fatalf("stored event %v, err %v", msg, err)
				}
			},
		},
		{
			name: "selector replicas share reservations", user: "selector",
			act: func(_ context.Context, c *roleConn) error {
				sub, err := c.nc.SubscribeSync(bus.ReservationSubject)
				if err != nil {
					return err
				}
				if err := publishCore(c, bus.ReservationSubject, []byte(`{"id":"r1"}`)); err != nil {
					return err
				}
				msg, err := sub.NextMsg(deployWait)
				if err != nil {
					return fmt.Errorf("no reservation: %w", err)
				}
				if string(msg.Data) != `{"id":"r1"}` {
					return fmt.Errorf("reservation %q", msg.Data)
				}
				return nil
			},
		},
		{
			name: "selector cannot put a model", user: "selector",
			denied: "$KV." + bus.ModelsBucket + ".selector-model",
			act: func(ctx context.Context, c *roleConn) error {
				kv, err := c.js.KeyValue(ctx, bus.ModelsBucket)
				if err != nil {
					return fmt.Errorf("open %s (reading is allowed): %w", bus.ModelsBucket, err)
				}
				_, err = kv.Put(ctx, "selector-model", []byte(`{}`))
				return err
			},
			verify: noModel("selector-model"),
		},
		{
			name: "selector cannot take orch.select outside its queue group", user: "selector",
			denied: bus.SelectSubject,
			act: func(_ context.Context, c *roleConn) error {
				if _, err := c.nc.SubscribeSync(bus.SelectSubject); err != nil {
					return err
				}
				return serverError(c)
			},
		},

		// Registry.
		{
			name: "registry puts and deletes in the three buckets", user: "registry",
			act: func(ctx context.Context, c *roleConn) error {
				for _, bucket := range buckets {
					kv, err := c.js.KeyValue(ctx, bucket)
					if err != nil {
						return fmt.Errorf("bucket %s: %w", bucket, err)
					}
					rev, err := kv.Create(ctx, "gone", []byte(`1`))
					if err != nil {
						return fmt.Errorf("create %s/gone: %w", bucket, err)
					}
					if rev, err = kv.Update(ctx, "gone", []byte(`2`), rev); err != nil {
						return fmt.Errorf("update %s/gone: %w", bucket, err)
					}
					if err := kv.Delete(ctx, "gone", jetstream.LastRevision(rev)); err != nil {
						return fmt.Errorf("delete %s/gone: %w", bucket, err)
					}
					if _, err := kv.Put(ctx, "kept", []byte(`3`)); err != nil {
						return fmt.Errorf("put %s/kept: %w", bucket, err)
					}
					if _, err := kv.Get(ctx, "kept"); err != nil {
						return fmt.Errorf("get %s/kept: %w", bucket, err)
					}
					w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
					if err != nil {
						return fmt.Errorf("watch %s: %w", bucket, err)
					}
					for entry := range w.Updates() {
						if entry == nil {
							break
						}
					}
					if err := w.Stop(); err != nil {
						return fmt.Errorf("stop watching %s: %w", bucket, err)
					}
				}
				return nil
			},
			verify: func(t *testing.T) {
				for _, bucket := range buckets {
					kv := e.adminKV(t, bucket)
					if _, err := kv.Get(testCtx(t), "gone"); !errors.Is(err, jetstream.ErrKeyNotFound) {
						t.Errorf("%s/gone not deleted: %v", bucket, err)
					}
					if v, err := kv.Get(testCtx(t), "kept"); err != nil || string(v.Value()) != `3` {
						t.Errorf("%s/kept: %v", bucket, err)
					}
				}
			},
		},
		{
			name: "admin changes the catalog through the registry", user: "admin",
			act: func(ctx context.Context, c *roleConn) error {
				subject := bus.RegistrySubjectPrefix + ".models.put"
				return request(ctx, c, subject, registryService+":"+subject)
			},
		},
		{
			name: "admin discovers the micro services", user: "admin",
			act: func(ctx context.Context, c *roleConn) error {
				for _, name := range []string{selectorService, registryService, sinkService} {
					msg, err := c.nc.RequestWithContext(ctx, "$SRV.INFO."+name, nil)
					if err != nil {
						return fmt.Errorf("discover %s: %w", name, err)
					}
					if !strings.Contains(string(msg.Data), `"name":"`+name+`"`) {
						return fmt.Errorf("discover %s: %s", name, msg.Data)
					}
				}
				return nil
			},
		},
		{
			name: "admin provisions again", user: "admin",
			act: func(ctx context.Context, c *roleConn) error { return bus.Provision(ctx, c.js) },
		},

		// Metrics-sink.
		{
			name: "metrics-sink fetches and acks on its durable", user: "metrics-sink",
			act: func(ctx context.Context, c *roleConn) error {
				cons, err := c.js.CreateOrUpdateConsumer(ctx, bus.SelectionStream, sinkConsumerConfig())
				if err != nil {
					return fmt.Errorf("durable: %w", err)
				}
				batch, err := cons.Fetch(1, jetstream.FetchMaxWait(deployWait))
				if err != nil {
					return fmt.Errorf("fetch: %w", err)
				}
				var got int
				for msg := range batch.Messages() {
					got++
					// Two acks on one delivery: the sink's ack rights, not
					// the single reply allow_responses grants.
					if err := msg.InProgress(); err != nil {
						return fmt.Errorf("in progress: %w", err)
					}
					if err := msg.DoubleAck(ctx); err != nil {
						return fmt.Errorf("ack: %w", err)
					}
				}
				if err := batch.Error(); err != nil {
					return fmt.Errorf("fetch: %w", err)
				}
				if got != 1 {
					return fmt.Errorf("fetched %d messages, want 1", got)
				}
				info, err := cons.Info(ctx)
				if err != nil {
					return fmt.Errorf("info: %w", err)
				}
				if info.NumAckPending != 0 || info.AckFloor.Consumer == 0 {
					return fmt.Errorf("after the ack: %d pending, ack floor %d", info.NumAckPending, info.AckFloor.Consumer)
				}
				return nil
			},
		},
		{
			name: "metrics-sink cannot publish decision events", user: "metrics-sink",
			denied: forgedEvent,
			act: func(ctx context.Context, c *roleConn) error {
				_, err := c.js.Publish(ctx, forgedEvent, []byte(`{}`))
				return err
			},
			verify: noMsg(bus.SelectionStream, forgedEvent),
		},

		// Analyst.
		{
			name: "analyst reads the decision stream with an ordered consumer", user: "analyst",
			act: func(ctx context.Context, c *roleConn) error {
				msg, err := readOrdered(ctx, c, bus.SelectionStream, bus.SelectionEventWildcard, jetstream.DeliverAllPolicy)
				if err != nil {
					return err
				}
				if msg.Subject() != bus.SelectionEventSubject("seed") {
					return fmt.Errorf("first event on %s", msg.Subject())
				}
				return nil
			},
		},
		{
			name: "analyst runs a sink report", user: "analyst",
			act: func(ctx context.Context, c *roleConn) error {
				subject := sinkPrefix + ".reports.run"
				return request(ctx, c, subject, sinkService+":"+subject)
			},
		},
		{
			name: "analyst reads the catalog through the registry", user: "analyst",
			act: func(ctx context.Context, c *roleConn) error {
				subject := bus.RegistrySubjectPrefix + ".models.list"
				return request(ctx, c, subject, registryService+":"+subject)
			},
		},
		{
			name: "analyst cannot change the catalog", user: "analyst",
			denied: bus.RegistrySubjectPrefix + ".models.put",
			act: func(ctx context.Context, c *roleConn) error {
				return request(ctx, c, bus.RegistrySubjectPrefix+".models.put", "")
			},
		},
		{
			name: "analyst cannot publish a decision event", user: "analyst",
			denied: forgedEvent,
			act: func(ctx context.Context, c *roleConn) error {
				_, err := c.js.Publish(ctx, forgedEvent, []byte(`{}`))
				return err
			},
			verify: noMsg(bus.SelectionStream, forgedEvent),
		},
		{
			name: "analyst cannot delete the decision stream", user: "analyst",
			denied: "$JS.API.STREAM.DELETE." + bus.SelectionStream,
			act: func(ctx context.Context, c *roleConn) error {
				return c.js.DeleteStream(ctx, bus.SelectionStream)
			},
			verify: func(t *testing.T) {
				if _, err := e.lastMsg(t, bus.SelectionStream, bus.SelectionEventSubject("seed")); err != nil {
					t.Fatalf("decision stream lost its events: %v", err)
				}
			},
		},
		{
			name: "analyst cannot redefine the sink's durable", user: "analyst",
			denied: "$JS.API.CONSUMER.CREATE." + bus.SelectionStream + "." + bus.SinkConsumer,
			act: func(ctx context.Context, c *roleConn) error {
				cfg := sinkConsumerConfig()
				cfg.AckWait = time.Second
				_, err := c.js.CreateOrUpdateConsumer(ctx, bus.SelectionStream, cfg)
				return err
			},
			verify: func(t *testing.T) {
				if got := e.sinkInfo(t).Config.AckWait; got != sinkAckWait {
					t.Fatalf("sink durable AckWait = %s, want %s", got, sinkAckWait)
				}
			},
		},
		{
			name: "analyst cannot delete the sink's durable", user: "analyst",
			denied: "$JS.API.CONSUMER.DELETE." + bus.SelectionStream + "." + bus.SinkConsumer,
			act: func(ctx context.Context, c *roleConn) error {
				return c.js.DeleteConsumer(ctx, bus.SelectionStream, bus.SinkConsumer)
			},
			verify: func(t *testing.T) { e.sinkInfo(t) },
		},
		{
			name: "analyst cannot pull from the sink's durable", user: "analyst",
			denied:  "$JS.API.CONSUMER.MSG.NEXT." + bus.SelectionStream + "." + bus.SinkConsumer,
			prepare: func(t *testing.T) { sinkDelivered = e.sinkInfo(t).Delivered.Consumer },
			act: func(ctx context.Context, c *roleConn) error {
				subject := "$JS.API.CONSUMER.MSG.NEXT." + bus.SelectionStream + "." + bus.SinkConsumer
				_, err := c.nc.RequestWithContext(ctx, subject, []byte(`{"batch":1,"no_wait":true}`))
				return err
			},
			verify: func(t *testing.T) {
				if got := e.sinkInfo(t).Delivered.Consumer; got != sinkDelivered {
					t.Fatalf("sink durable delivered %d messages, %d before the analyst pulled", got, sinkDelivered)
				}
			},
		},
	}
	for _, pc := range checks {
		t.Run(pc.name, func(t *testing.T) { e.run(t, pc) })
	}

	t.Run("authentication", func(t *testing.T) {
		e.checkAuthentication(t)
	})

	// Every violation the server logged must be one a check asked for: a
	// missing permission in a service's background work shows up here.
	t.Run("no other permission violations", func(t *testing.T) {
		expected := map[string]string{}
		for _, pc := range checks {
			if pc.denied != "" {
				expected["check:"+pc.name] = pc.denied
			}
		}
		logged := map[string]bool{}
		for _, v := range e.log.violations() {
			if expected[v.conn] != v.subject {
				t.Errorf("unexpected permission violation on connection %q: %s", v.conn, v.subject)
			}
			logged[v.conn] = true
		}
		for conn, subject := range expected {
			if !logged[conn] {
				t.Errorf("the server did not log the violation of %q on %s", conn, subject)
			}
		}
		if t.Failed() {
			t.Logf("server errors:\n%s", e.log)
		}
	})
}

// checkAuthentication: every configured user logs in with its test password,
// and nothing else gets in.
func (e *deployEnv) checkAuthentication(t *testing.T) {
	var configured []string
	for _, u := range e.opts.Users {
		configured = append(configured, u.Username)
		if u.Account == nil || u.Account.Name != "ORCH" {
			t.Errorf("user %s is not in account ORCH", u.Username)
		}
	}
	slices.Sort(configured)
	if !slices.Equal(configured, deployUsers) {
		t.Errorf("%s has users %v, want %v (a new role needs its checks here)", deployConfig, configured, deployUsers)
	}
	for _, user := range configured {
		t.Run("user "+user+" logs in", func(t *testing.T) {
			e.connect(t, user, "auth:"+user)
		})
	}

	refused := []struct {
		name, user, password string
	}{
		{"wrong password", "selector", "wrong-secret"},
		{"another user's password", "telemetry-gpu-node-1", testPassword("registry")},
		{"unknown user", "intruder", testPassword("intruder")},
		{"no credentials", "", ""},
	}
	for _, tc := range refused {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			c, err := e.dial(testCtx(t), tc.user, tc.password, "auth:"+tc.name)
			if err == nil {
				c.nc.Close()
				t.Fatalf("user %q logged in", tc.user)
			}
			if !errors.Is(err, bus.ErrConnect) || !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("err = %v, want %v and %v", err, bus.ErrConnect, nats.ErrAuthorization)
			}
		})
	}
}

// TestDeployClusterConfigs checks the 3-node templates: each parses, names
// itself uniquely, joins cluster "orch" through routes to all three nodes,
// runs JetStream and has the same users as the single server.
func TestDeployClusterConfigs(t *testing.T) {
	single, err := server.ProcessConfigFile(deployConfig)
	if err != nil {
		t.Fatalf("%s: %v", deployConfig, err)
	}
	wantUsers := userPermissions(single)
	names := map[string]string{}
	for _, node := range []string{"node-1", "node-2", "node-3"} {
		t.Run(node, func(t *testing.T) {
			file := "../../deploy/nats/cluster/" + node + ".conf"
			opts, err := server.ProcessConfigFile(file)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if other, taken := names[opts.ServerName]; taken || opts.ServerName == "" {
				t.Errorf("server_name %q (also %s)", opts.ServerName, other)
			}
			names[opts.ServerName] = node
			if !opts.JetStream {
				t.Error("JetStream not enabled")
			}
			if opts.Cluster.Name != "orch" || opts.Cluster.Port == 0 {
				t.Errorf("cluster %q on port %d", opts.Cluster.Name, opts.Cluster.Port)
			}
			var hosts []string
			for _, r := range opts.Routes {
				hosts = append(hosts, r.Host)
				if r.User == nil || r.User.Username() != opts.Cluster.Username {
					t.Errorf("route %s does not authenticate as %q", r.Host, opts.Cluster.Username)
				}
			}
			if want := []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}; !slices.Equal(hosts, want) {
				t.Errorf("routes %v, want %v", hosts, want)
			}
			if got := userPermissions(opts); !maps.Equal(got, wantUsers) {
				t.Errorf("users differ from %s:\n%v\nwant\n%v", deployConfig, got, wantUsers)
			}
		})
	}
}

// userPermissions renders each user's account and permissions for comparison.
func userPermissions(opts *server.Options) map[string]string {
	out := map[string]string{}
	for _, u := range opts.Users {
		acc := ""
		if u.Account != nil {
			acc = u.Account.Name
		}
		perms := "no permissions"
		if p := u.Permissions; p != nil {
			perms = fmt.Sprintf("%+v %+v %+v", p.Publish, p.Subscribe, p.Response)
		}
		out[u.Username] = acc + " " + u.Password + " " + perms
	}
	return out
}

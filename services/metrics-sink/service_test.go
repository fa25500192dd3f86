package metricssink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/logging/logtest"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

// serving starts a sink on st and waits until its endpoints answer.
func serving(t *testing.T, nc *nats.Conn, st Store) *running {
	t.Helper()
	r := start(t, testConfig(), natstest.JetStream(t, nc), st)
	// Every endpoint, not just one: Run adds them one after another.
	for _, ep := range r.svc.endpoints() {
		waitFor(t, "endpoint "+ep.subject, func() bool {
			_, err := nc.RequestWithContext(testCtx(t), ep.subject, nil)
			return !errors.Is(err, nats.ErrNoResponders)
		})
	}
	return r
}

// ingest waits until the sink has stored n rows and acked everything.
func ingest(t *testing.T, st Store, r *running, n int64) {
	t.Helper()
	waitFor(t, "every row", func() bool { return count(t, st) == n })
	settled(t, r.svc)
}

// rawRequest sends body to subject and returns the reply.
func rawRequest(t *testing.T, nc *nats.Conn, subject, body string) *nats.Msg {
	t.Helper()
	msg, err := nc.RequestWithContext(testCtx(t), subject, []byte(body))
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

// viaJSON is v as a client sees it: encoded and decoded again (numbers float64).
func viaJSON(t *testing.T, v [][]any) [][]any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTable fails unless got and want hold the same rows, floats to 1e-9;
// rows are compared in order for the one report whose query sorts them, and
// sorted by their first column otherwise.
func sameTable(t *testing.T, name string, got, want [][]any) {
	t.Helper()
	if name != ReportModelsPerCategory {
		byFirst := func(a, b []any) int { return strings.Compare(fmt.Sprint(a[0]), fmt.Sprint(b[0])) }
		got, want = slices.Clone(got), slices.Clone(want)
		slices.SortFunc(got, byFirst)
		slices.SortFunc(want, byFirst)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: rows %v, want %v", name, got, want)
	}
	for i := range got {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s row %d: %v, want %v", name, i, got[i], want[i])
		}
		for j := range got[i] {
			g, w := got[i][j], want[i][j]
			gf, gok := g.(float64)
			wf, wok := w.(float64)
			if gok && wok && math.Abs(gf-wf) <= 1e-9 || g == w {
				continue
			}
			t.Errorf("%s row %d col %d = %#v, want %#v", name, i, j, g, w)
		}
	}
}

func TestServiceInfo(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	serving(t, nc, st)
	subj, err := micro.ControlSubject(micro.InfoVerb, ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(rawRequest(t, nc, subj, "").Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != ServiceName || info.Version != "1.0.0" {
		t.Fatalf("service %s %s, want %s 1.0.0", info.Name, info.Version, ServiceName)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
		if ep.QueueGroup != QueueGroup {
			t.Errorf("endpoint %s queue group %q, want %q", ep.Name, ep.QueueGroup, QueueGroup)
		}
	}
	want := []string{"orch.sink.recent", "orch.sink.reports.list", "orch.sink.reports.run", "orch.sink.stats"}
	slices.Sort(subjects)
	if !slices.Equal(subjects, want) {
		t.Fatalf("endpoint subjects %v, want %v", subjects, want)
	}
}

// TestReportEndpoints: over the bus, each report holds what the seed's
// query gives on the same table, and the hand-worked numbers.
func TestReportEndpoints(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	r := serving(t, nc, st)
	evs := reportData()
	publish(t, natstest.JetStream(t, nc), evs)
	ingest(t, st, r, int64(len(evs)))

	list, err := ListReports(testCtx(t), nc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(list, Reports()) {
		t.Fatalf("ListReports = %v, want %v", list, Reports())
	}
	db := st.(*SQLiteStore).DB()
	for _, info := range list {
		t.Run(info.Name, func(t *testing.T) {
			res, err := RunReport(testCtx(t), nc, info.Name)
			if err != nil {
				t.Fatal(err)
			}
			def, err := lookupReport(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			seedCols, seedRows := queryAll(t, db, def.sqlite)
			want := wantReports[info.Name]
			if res.Name != info.Name || !slices.Equal(res.Columns, seedCols) || !slices.Equal(res.Columns, want.cols) {
				t.Fatalf("report %s columns %v, seed query %v, want %v", res.Name, res.Columns, seedCols, want.cols)
			}
			sameTable(t, info.Name, res.Rows, viaJSON(t, seedRows))
			sameTable(t, info.Name, res.Rows, viaJSON(t, want.rows))
		})
	}
}

func TestRecentEndpoint(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	r := serving(t, nc, st)
	ctx := testCtx(t)

	if got := rawRequest(t, nc, SubjectRecent, "").Data; string(got) != "[]" {
		t.Fatalf("recent on an empty table = %s, want []", got)
	}
	const n = 30
	publish(t, natstest.JetStream(t, nc), makeEvents(0, n))
	ingest(t, st, r, n)

	newest := func(k int) []string {
		var ids []string
		for i := n - 1; i >= n-k; i-- {
			ids = append(ids, makeEvent(i).EventID)
		}
		return ids
	}
	ids := func(rows []Row) []string {
		var out []string
		for _, row := range rows {
			out = append(out, row.EventID)
		}
		return out
	}
	cases := []struct {
		name, body string
		want       []string
	}{
		{"empty body takes the default", "", newest(DefaultRecentLimit)},
		{"no limit takes the default", "{}", newest(DefaultRecentLimit)},
		{"limit 5", `{"limit":5}`, newest(5)},
		{"limit above the row count", fmt.Sprintf(`{"limit":%d}`, MaxRecentLimit), newest(n)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := rawRequest(t, nc, SubjectRecent, c.body)
			if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
				t.Fatalf("error %s: %s", code, msg.Data)
			}
			var rows []Row
			if err := json.Unmarshal(msg.Data, &rows); err != nil {
				t.Fatal(err)
			}
			if got := ids(rows); !slices.Equal(got, c.want) {
				t.Fatalf("ids %v, want %v", got, c.want)
			}
		})
	}
	t.Run("client rows equal the store's", func(t *testing.T) {
		got, err := Recent(ctx, nc, 5)
		if err != nil {
			t.Fatal(err)
		}
		want, err := st.Recent(ctx, 5)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if !bytes.Equal(g, w) {
			t.Fatalf("Recent over the bus:\n%s\nstore:\n%s", g, w)
		}
	})
}

func TestStatsEndpoint(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	r := serving(t, nc, st)
	const n = 40
	publish(t, natstest.JetStream(t, nc), makeEvents(0, n))
	ingest(t, st, r, n)

	got, err := FetchStats(testCtx(t), nc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Inserted != n || got.Duplicates != 0 || got.Poison != 0 || got.Batches == 0 || got.LastCommit.IsZero() {
		t.Fatalf("stats %+v, want %d inserted, batches and a last commit", got, n)
	}
	var fields map[string]any
	if err := json.Unmarshal(rawRequest(t, nc, SubjectStats, "").Data, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"inserted", "duplicates", "poison", "ingest_rate", "consumer_lag", "ack_pending"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("stats JSON lacks %q: %v", k, fields)
		}
	}
}

func TestEndpointErrors(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	serving(t, nc, st)
	cases := []struct {
		name, subject, body string
		code                string
	}{
		{"report: not JSON", SubjectReportsRun, "not json", bus.CodeBadRequest},
		{"report: empty body", SubjectReportsRun, "", bus.CodeBadRequest},
		{"report: no name", SubjectReportsRun, "{}", bus.CodeBadRequest},
		{"report: name not a string", SubjectReportsRun, `{"name":5}`, bus.CodeBadRequest},
		{"report: unknown field", SubjectReportsRun, `{"report":"models-per-category"}`, bus.CodeBadRequest},
		{"report: data after the body", SubjectReportsRun, `{"name":"models-per-category"} {}`, bus.CodeBadRequest},
		{"report: unknown name", SubjectReportsRun, `{"name":"no-such-report"}`, bus.CodeNotFound},
		{"recent: not JSON", SubjectRecent, "[1]", bus.CodeBadRequest},
		{"recent: limit 0", SubjectRecent, `{"limit":0}`, bus.CodeBadRequest},
		{"recent: negative limit", SubjectRecent, `{"limit":-1}`, bus.CodeBadRequest},
		{"recent: limit too large", SubjectRecent, fmt.Sprintf(`{"limit":%d}`, MaxRecentLimit+1), bus.CodeBadRequest},
		{"recent: limit not a number", SubjectRecent, `{"limit":"5"}`, bus.CodeBadRequest},
		{"recent: fractional limit", SubjectRecent, `{"limit":2.5}`, bus.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := rawRequest(t, nc, c.subject, c.body)
			if code := msg.Header.Get(micro.ErrorCodeHeader); code != c.code {
				t.Fatalf("code %q (%s), want %s", code, msg.Data, c.code)
			}
			var body bus.ErrorBody
			if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error == "" {
				t.Fatalf("error body %s: %v", msg.Data, err)
			}
			if desc := msg.Header.Get(micro.ErrorHeader); desc != body.Error {
				t.Errorf("description %q differs from the body's error %q", desc, body.Error)
			}
			if c.code == bus.CodeNotFound {
				for _, r := range Reports() {
					if !strings.Contains(body.Error, r.Name) {
						t.Errorf("404 body %q does not list %s", body.Error, r.Name)
					}
				}
			}
		})
	}
}

// downStore stands for a database that stopped answering reads.
type downStore struct{ Store }

func (downStore) Report(context.Context, string) (*ReportResult, error) {
	return nil, fmt.Errorf("%w: %w", ErrQuery, errDown)
}

func (downStore) Recent(context.Context, int) ([]Row, error) {
	return nil, fmt.Errorf("%w: %w", ErrQuery, errDown)
}

func (downStore) Series(context.Context, SeriesQuery) (*Series, error) {
	return nil, fmt.Errorf("%w: %w", ErrQuery, errDown)
}

func (downStore) Ping(context.Context) error {
	return fmt.Errorf("%w: %w", ErrQuery, errDown)
}

// TestClientErrors: each error code reaches the caller as its sentinel, on
// a *RemoteError that keeps the code and the sink's message.
func TestClientErrors(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	serving(t, nc, downStore{st})
	ctx := testCtx(t)
	run := func(name string) func() error {
		return func() error { _, err := RunReport(ctx, nc, name); return err }
	}
	recent := func(limit int) func() error {
		return func() error { _, err := Recent(ctx, nc, limit); return err }
	}
	cases := []struct {
		name    string
		call    func() error
		want    error
		code    string
		message string
	}{
		{"unknown report", run("no-such-report"), ErrUnknownReport, bus.CodeNotFound, ReportPerformanceByCategory},
		{"empty report name", run(""), ErrBadRequest, bus.CodeBadRequest, "name is missing"},
		{"limit 0", recent(0), ErrBadRequest, bus.CodeBadRequest, "outside 1..1000"},
		{"limit too large", recent(MaxRecentLimit + 1), ErrBadRequest, bus.CodeBadRequest, "outside 1..1000"},
		{"report while the database is down", run(ReportModelsPerCategory), ErrUnavailable, bus.CodeNotReady, errDown.Error()},
		{"recent while the database is down", recent(5), ErrUnavailable, bus.CodeNotReady, errDown.Error()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, c.want) || !errors.Is(err, ErrRequest) {
				t.Fatalf("error %v, want %v and ErrRequest", err, c.want)
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != c.code || !strings.Contains(re.Message, c.message) {
				t.Fatalf("error %#v, want code %s and a message naming %q", err, c.code, c.message)
			}
			for _, other := range []error{ErrBadRequest, ErrUnknownReport, ErrUnavailable, ErrEncodeReply} {
				if other != c.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

// TestServiceStopsWithRun: once Run has returned nobody answers, and the
// client says so at once instead of waiting for its timeout.
func TestServiceStopsWithRun(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	r := serving(t, nc, st)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	// No deadline: the client's own ClientTimeout applies, and no
	// responders must end the request well before it.
	_, err := ListReports(context.Background(), nc)
	if !errors.Is(err, ErrRequest) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("ListReports after Run = %v, want ErrRequest wrapping no responders", err)
	}
}

// TestRunProvisions: on a server nothing has provisioned, Run creates the
// stream when Provision is set and fails on the missing stream otherwise.
func TestRunProvisions(t *testing.T) {
	for _, provision := range []bool{true, false} {
		t.Run(fmt.Sprint("provision=", provision), func(t *testing.T) {
			srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				srv.Shutdown()
				srv.WaitForShutdown()
			})
			nc := natstest.Connect(t, srv)
			js := natstest.JetStream(t, nc)
			st, _ := sqliteStore(t)
			cfg := testConfig()
			cfg.Provision = provision
			r := start(t, cfg, js, st)
			if !provision {
				select {
				case err := <-r.done:
					close(r.done)
					if !errors.Is(err, ErrConsumer) {
						t.Fatalf("Run without a stream returned %v, want ErrConsumer", err)
					}
				case <-time.After(60 * time.Second):
					t.Fatal("Run kept going without a stream")
				}
				return
			}
			// The endpoints start after provisioning and the consumer.
			waitFor(t, "the endpoints", func() bool {
				_, err := ListReports(testCtx(t), nc)
				return err == nil
			})
			publish(t, js, makeEvents(0, 1))
			waitFor(t, "the row", func() bool { return count(t, st) == 1 })
		})
	}
}

func TestRunLogsStats(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	cfg := testConfig()
	cfg.StatsInterval = 10 * time.Millisecond
	var out logtest.Buffer
	svc, err := New(cfg, natstest.JetStream(t, nc), st, WithLogger(zerolog.New(&out)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	waitFor(t, "a stats line", func() bool { return strings.Contains(out.String(), `"message":"metrics-sink stats"`) })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !strings.Contains(out.String(), `"inserted":0`) {
		t.Fatalf("stats line without counters:\n%s", out.String())
	}
}

// notingStore is a store that worked around something when it opened.
type notingStore struct{ Store }

func (notingStore) OpenNotes() []string {
	return []string{"event_json stays compressed with pglz, not lz4: must be owner of table selection_metrics"}
}

// TestRunLogsStoreNotes: what the store worked around at open is logged
// as a warning when the sink starts.
func TestRunLogsStoreNotes(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	var out logtest.Buffer
	start(t, testConfig(), natstest.JetStream(t, nc), notingStore{st}, WithLogger(zerolog.New(&out)))
	waitFor(t, "the sink consuming", func() bool { return strings.Contains(out.String(), `"message":"metrics-sink consuming"`) })
	if !strings.Contains(out.String(), `{"level":"warn","message":"event_json stays compressed with pglz, not lz4: must be owner of table selection_metrics"}`) {
		t.Fatalf("no warning with the store's note:\n%s", out.String())
	}
}

// A handler's panic (bus.Guard's ErrPanic) is answered 500.
func TestPanicIsAnswered500(t *testing.T) {
	if code := codeOf(fmt.Errorf("%w: orch.sink.recent", bus.ErrPanic)); code != bus.CodeInternal {
		t.Fatalf("code of a panic = %s, want 500", code)
	}
}

package registry

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

// requestTimeout only keeps a broken test from hanging; no test asserts on time.
const requestTimeout = 30 * time.Second

type harness struct {
	t      *testing.T
	srv    *server.Server
	nc     *nats.Conn // the service's connection
	client *nats.Conn
	js     jetstream.JetStream
	svc    *Service
}

// startServer starts a provisioned NATS server without a registry.
func startServer(t *testing.T) *harness {
	t.Helper()
	srv, nc := natstest.Start(t)
	return &harness{t: t, srv: srv, nc: nc, client: natstest.Connect(t, srv), js: natstest.JetStream(t, nc)}
}

// start runs a registry seeded from the example data on a fresh server.
func start(t *testing.T) *harness {
	t.Helper()
	h := startServer(t)
	h.run(Config{Provision: true}, WithSeedData(exampledata.Registry, exampledata.Categories))
	return h
}

// run starts a registry service on h's server and waits until it serves.
func (h *harness) run(cfg Config, opts ...Option) *Service {
	h.t.Helper()
	svc, err := New(cfg, h.nc, append([]Option{WithLogger(zerolog.Nop())}, opts...)...)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = svc.Run(ctx)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			h.t.Errorf("Run: %v", runErr)
		}
	})
	select {
	case <-svc.Ready():
	case <-done:
		h.t.Fatalf("Run ended before serving: %v", runErr)
	}
	h.svc = svc
	return svc
}

// reply is one API answer: the body, and for errors the code and error body.
type reply struct {
	data []byte
	code string
	desc string
	body bus.ErrorBody
}

// call sends body (marshalled unless it is []byte; nil sends nothing) to the
// endpoint orch.registry.<endpoint>.
func (h *harness) call(endpoint string, body any) reply {
	h.t.Helper()
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	case string:
		payload = []byte(b)
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			h.t.Fatalf("marshal request: %v", err)
		}
	}
	msg, err := h.client.Request(bus.RegistrySubjectPrefix+"."+endpoint, payload, requestTimeout)
	if err != nil {
		h.t.Fatalf("%s: %v", endpoint, err)
	}
	r := reply{data: msg.Data, code: msg.Header.Get(micro.ErrorCodeHeader), desc: msg.Header.Get(micro.ErrorHeader)}
	if r.code != "" {
		if err := json.Unmarshal(msg.Data, &r.body); err != nil {
			h.t.Fatalf("%s: error body %q: %v", endpoint, msg.Data, err)
		}
		if strings.ContainsAny(r.desc, "\r\n") || r.body.Error != r.desc {
			h.t.Errorf("%s: description %q must be one line and the body's error (%q)", endpoint, r.desc, r.body.Error)
		}
	}
	return r
}

// ok calls an endpoint that must succeed and decodes its reply into out.
func (h *harness) ok(endpoint string, body, out any) {
	h.t.Helper()
	r := h.call(endpoint, body)
	if r.code != "" {
		h.t.Fatalf("%s: error %s %q, problems %q", endpoint, r.code, r.desc, r.body.Problems)
	}
	if out != nil {
		if err := json.Unmarshal(r.data, out); err != nil {
			h.t.Fatalf("%s: reply %q: %v", endpoint, r.data, err)
		}
	}
}

// seqs is the last sequence of each registry bucket's stream: any write,
// delete included, raises it.
func (h *harness) seqs() map[string]uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	out := map[string]uint64{}
	for _, b := range []string{bus.ModelsBucket, bus.CategoriesBucket, bus.ConfigBucket} {
		st, err := h.js.Stream(ctx, "KV_"+b)
		if err != nil {
			h.t.Fatalf("stream of %s: %v", b, err)
		}
		out[b] = st.CachedInfo().State.LastSeq
	}
	return out
}

func (h *harness) load() (*catalog.Catalog, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	cat, _, err := LoadCatalog(ctx, h.js)
	return cat, err
}

// example returns the example documents, decoded, for tests to edit.
func example(t *testing.T) (catalog.RegistryFile, catalog.CategoriesFile) {
	t.Helper()
	var reg catalog.RegistryFile
	var cats catalog.CategoriesFile
	if err := errors.Join(json.Unmarshal(exampledata.Registry, &reg), json.Unmarshal(exampledata.Categories, &cats)); err != nil {
		t.Fatalf("example data: %v", err)
	}
	return reg, cats
}

func exampleCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.Parse(catalog.RegistryFileName, exampledata.Registry, catalog.CategoriesFileName, exampledata.Categories)
	if err != nil {
		t.Fatalf("example data: %v", err)
	}
	return cat
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

// testModel is a valid model of the example catalog that it does not hold.
func testModel() catalog.Model {
	return catalog.Model{
		ID: "test-coder-7b-q4_k_m", Name: "Test Coder 7B", ParametersB: 7, Quantization: "q4_k_m",
		GPUMemoryMB: 6000, ContextLength: 32768, OrchestrationCategories: []string{"code", "math"},
		Benchmarks: map[string]float64{"HumanEval": 80, "GSM8K": 70}, Source: "test",
	}
}

// hasProblem reports whether a problem line contains every part.
// refused calls endpoint with body and checks the registry refused it with
// wantCode, listed a problem containing each of wantProblems' parts, and left
// every bucket as it was. It returns the reply.
func (h *harness) refused(t *testing.T, endpoint string, body any, wantCode string, wantProblems ...[]string) reply {
	t.Helper()
	before := h.seqs()
	r := h.call(endpoint, body)
	t.Logf("%s %s: %q", r.code, r.desc, r.body.Problems)
	if r.code != wantCode {
		t.Fatalf("code %q (%s), want %q", r.code, r.desc, wantCode)
	}
	for _, parts := range wantProblems {
		if !hasProblem(r.body.Problems, parts...) {
			t.Errorf("no problem with %q in %q", parts, r.body.Problems)
		}
	}
	if after := h.seqs(); !maps.Equal(before, after) {
		t.Fatalf("a refused %s changed the buckets: %v -> %v", endpoint, before, after)
	}
	return r
}

func hasProblem(problems []string, parts ...string) bool {
	for _, p := range problems {
		all := true
		for _, part := range parts {
			all = all && strings.Contains(p, part)
		}
		if all {
			return true
		}
	}
	return false
}

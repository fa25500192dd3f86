package selector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// fakeRequest is a micro.Request that records the answer.
type fakeRequest struct {
	data  []byte
	reply []byte
	code  string
}

func (r *fakeRequest) Respond(b []byte, _ ...micro.RespondOpt) error { r.reply = b; return nil }
func (r *fakeRequest) RespondJSON(v any, _ ...micro.RespondOpt) error {
	r.reply, _ = json.Marshal(v)
	return nil
}
func (r *fakeRequest) Error(code, _ string, body []byte, _ ...micro.RespondOpt) error {
	r.code, r.reply = code, body
	return nil
}
func (r *fakeRequest) Data() []byte           { return r.data }
func (r *fakeRequest) Headers() micro.Headers { return nil }
func (r *fakeRequest) Subject() string        { return "orch.select" }
func (r *fakeRequest) Reply() string          { return "_INBOX.x" }

// BenchmarkAnswer is the selector's own work per request (decode, select,
// encode the reply, build the event), without NATS.
func BenchmarkAnswer(b *testing.B) {
	cat, err := catalog.Parse(exampledata.RegistryFile, exampledata.Registry, exampledata.CategoriesFile, exampledata.Categories)
	if err != nil {
		b.Fatal(err)
	}
	engCfg := selection.DefaultConfig()
	engCfg.ReservationTTLMs = 0 // as in scripts/bench-nats: the fleet never fills
	eng, err := selection.NewEngine(cat, engCfg)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var samples []telemetry.Sample
	for i := range 64 {
		s := gpuSample(fmt.Sprintf("h%02d", i/8), i%8, now)
		s.UtilizationGPUPct = float64(i % 100)
		samples = append(samples, s)
	}
	cfg := DefaultConfig()
	cfg.ShareReservations = false
	s := &Service{cfg: cfg, now: time.Now, ledger: selection.NewLedger(), cache: telemetry.NewCache()}
	s.events = &EventPublisher{queue: make(chan *nats.Msg, 1)}
	s.snap.Store(&snapshot{engine: eng, fleet: eng.NewFleet(samples, s.ledger)})
	req := &fakeRequest{data: []byte(`{"task_category":"code","request_id":"nflow-1234"}`)}
	b.ReportAllocs()
	for b.Loop() {
		s.answer(req, time.Now())
		if req.code != "" {
			b.Fatalf("error %s: %s", req.code, req.reply)
		}
		select {
		case <-s.events.queue:
		default:
		}
	}
}

// panickyRequest panics when its body is read: a stand-in for a bug that
// one request meets.
type panickyRequest struct{ fakeRequest }

func (r *panickyRequest) Data() []byte { panic("boom") }

// A panic while handling one request is answered 500 and counted; the
// selector goes on.
func TestHandlePanicAnswers500(t *testing.T) {
	s := &Service{log: zerolog.Nop(), now: time.Now}
	req := &panickyRequest{}
	s.handle(req)
	if req.code != bus.CodeInternal || !strings.Contains(string(req.reply), "panicked") {
		t.Fatalf("answered %q %s, want 500 internal error", req.code, req.reply)
	}
	if n := s.errors[slices.Index(errorCodes[:], bus.CodeInternal)].Load(); n != 1 {
		t.Fatalf("%d 500s counted, want 1", n)
	}
}

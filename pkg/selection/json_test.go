package selection_test

import (
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/jsonw"
	"github.com/nlocalmodels/orchestrator/pkg/jsonw/jsonwtest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// plainReply has Reply's fields and tags but not its MarshalJSON, so
// encoding/json encodes it by reflection: the reference.
type plainReply selection.Reply

func TestReplyJSONIsEncodingJSONs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := jsonwtest.Make[selection.Reply]().Draw(t, "reply")
		jsonwtest.SameAsEncodingJSON(t, plainReply(r), r.WriteJSON)
		got, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var w jsonw.Writer
		r.WriteJSON(&w)
		if string(got) != string(w.B) {
			t.Fatalf("MarshalJSON %s differs from WriteJSON %s", got, w.B)
		}
	})
}

func TestRequestJSONIsEncodingJSONs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := jsonwtest.Make[selection.Request]().Draw(t, "request")
		jsonwtest.SameAsEncodingJSON(t, r, r.WriteJSON)
	})
}

func BenchmarkReplyJSON(b *testing.B) {
	gpu := &selection.GPURef{Host: "gpu-host-01", Index: 3, UUID: "GPU-8f1c2a7e-0c1d-4f4e-9a55-0d6f3c0b1e21", Name: "NVIDIA A100-SXM4-80GB"}
	scores := selection.Scores{Quality: 0.861234, Confidence: 0.95, Placement: 0.734211, Utilization: 0.62, Headroom: 0.8125, Temperature: 0.9}
	r := selection.Reply{
		RequestID: "req-123", EventID: "Xk3LJw8W1Yb2bqQ9sZ0aPq", TaskCategory: "code", RequestedMode: selection.ModeGPUAware, Mode: selection.ModeGPUAware,
		ModelID: "qwen2.5-coder-14b-instruct-q4_k_m", ModelName: "Qwen2.5-Coder 14B Instruct", Quantization: "Q4_K_M", GPUMemoryMB: 10240,
		PrimaryCategory: true, GPU: gpu, FinalScore: 0.612345, Scores: scores,
		Reason:         "qwen2.5-coder-14b-instruct-q4_k_m: code quality 0.861 x confidence 0.95 x placement 0.734 on gpu-host-01/3",
		Alternatives:   []selection.Alternative{{ModelID: "a", GPU: gpu, FinalScore: 0.6, Scores: scores}, {ModelID: "b", GPU: gpu, FinalScore: 0.5, Scores: scores}, {ModelID: "c", GPU: gpu, FinalScore: 0.4, Scores: scores}},
		TelemetryAgeMs: 1234.5, Candidates: 128, SelectionDurationUs: 2.345678, TieSeed: 1234567890123, Timestamp: time.Now(),
	}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = r.AppendJSON(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

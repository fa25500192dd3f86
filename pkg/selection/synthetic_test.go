package selection

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// testBenchmarks and testCategories are a small fixed vocabulary for the
// synthetic catalogs of the tests and benchmarks.
var testBenchmarks = []catalog.Benchmark{
	{Name: "HumanEval", Description: "code", Metric: "pass@1 %"},
	{Name: "MBPP", Description: "code", Metric: "pass@1 %"},
	{Name: "GSM8K", Description: "math", Metric: "accuracy %"},
	{Name: "MATH", Description: "math", Metric: "accuracy %"},
	{Name: "MMLU", Description: "knowledge", Metric: "accuracy %"},
	{Name: "IFEval", Description: "instructions", Metric: "accuracy %"},
}

var testCategories = []catalog.Category{
	{Name: "code", Description: "code", Weights: map[string]float64{"HumanEval": 1.0, "MBPP": 0.8}},
	{Name: "math", Description: "math", Weights: map[string]float64{"GSM8K": 1.2, "MATH": 1.5}},
	{Name: "general", Description: "general", Weights: map[string]float64{"MMLU": 1.0, "IFEval": 0.5}},
}

// syntheticCatalog makes n models with random scores, sizes and categories.
func syntheticCatalog(tb fataler, n int, seed uint64) *catalog.Catalog {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	names := []string{"code", "math", "general"}
	models := make([]catalog.Model, n)
	for i := range models {
		cats := []string{names[r.IntN(3)]}
		for _, c := range names {
			if c != cats[0] && r.IntN(3) == 0 {
				cats = append(cats, c)
			}
		}
		bench := map[string]float64{}
		for _, b := range testBenchmarks {
			if r.IntN(5) > 0 {
				bench[b.Name] = float64(r.IntN(1000)) / 10
			}
		}
		models[i] = catalog.Model{
			ID: fmt.Sprintf("model-%04d", i), Name: fmt.Sprintf("Model %d", i),
			ParametersB: 7, Quantization: []string{"fp16", "q8_0", "q4_k_m"}[r.IntN(3)],
			GPUMemoryMB: int64(2000 + r.IntN(60000)), ContextLength: []int{8192, 32768, 131072}[r.IntN(3)],
			OrchestrationCategories: cats, Benchmarks: bench, Source: "synthetic",
		}
	}
	cat, err := catalog.New(testBenchmarks, testCategories, models)
	if err != nil {
		tb.Fatalf("synthetic catalog: %v", err)
	}
	return cat
}

// syntheticSamples makes n GPU samples over n/8 hosts, all taken at now.
func syntheticSamples(n int, seed uint64, now time.Time) []telemetry.Sample {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([]telemetry.Sample, n)
	for i := range out {
		total := []int64{24564, 46068, 81920}[r.IntN(3)]
		used := int64(r.Float64() * float64(total))
		out[i] = telemetry.Sample{
			Host: fmt.Sprintf("host-%03d", i/8), Index: i % 8, UUID: fmt.Sprintf("GPU-%08d", i),
			Name: "NVIDIA A100-SXM4-80GB", Timestamp: now, Source: "simulated",
			MemoryTotalMB: total, MemoryUsedMB: used, MemoryFreeMB: total - used,
			UtilizationGPUPct: float64(r.IntN(101)), TemperatureC: float64(30 + r.IntN(60)),
			PowerW: 200, PowerLimitW: 400, Healthy: r.IntN(20) > 0,
		}
	}
	return out
}

// fataler is what test helpers need of *testing.T, *testing.B and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

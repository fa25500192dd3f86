// Package catalog holds the model registry and task categories: the Go types of
// MODEL_REGISTRY.json and task_categories.json, and their loading and validation.
package catalog

// RegistryFile is the document stored in MODEL_REGISTRY.json.
type RegistryFile struct {
	Version int     `json:"version"`
	Models  []Model `json:"models"`
}

// Model is one deployable model build: a model at one quantization.
type Model struct {
	// ID is unique in the registry and is the key in the orch_models bucket.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Family groups builds of the same weights (e.g. "qwen2.5-coder").
	Family       string  `json:"family,omitempty"`
	ParametersB  float64 `json:"parameters_b"`
	Quantization string  `json:"quantization"`
	// GPUMemoryMB is the memory the model needs on one GPU to serve requests:
	// weights plus KV cache for its default context and runtime overhead.
	GPUMemoryMB   int64 `json:"gpu_memory_mb"`
	ContextLength int   `json:"context_length"`
	// OrchestrationCategories lists the task categories the model serves; the
	// first one is its primary category (the seed's orchestration_categories).
	OrchestrationCategories []string `json:"orchestration_categories"`
	// Benchmarks maps a benchmark name to the published score, 0..100.
	Benchmarks map[string]float64 `json:"benchmarks"`
	// Confidence overrides the configured confidence for the named categories.
	Confidence map[string]float64 `json:"confidence,omitempty"`
	// Source names where the benchmark figures were published.
	Source   string `json:"source"`
	License  string `json:"license,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
}

// PrimaryCategory is the first orchestration category, or "" when there is none.
func (m *Model) PrimaryCategory() string {
	if len(m.OrchestrationCategories) == 0 {
		return ""
	}
	return m.OrchestrationCategories[0]
}

// Serves reports whether the model lists the category.
func (m *Model) Serves(category string) bool {
	for _, c := range m.OrchestrationCategories {
		if c == category {
			return true
		}
	}
	return false
}

// CategoriesFile is the document stored in task_categories.json.
type CategoriesFile struct {
	Version    int         `json:"version"`
	Benchmarks []Benchmark `json:"benchmarks"`
	Categories []Category  `json:"categories"`
}

// Benchmark describes one published benchmark a category may weigh.
type Benchmark struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Metric says what the 0..100 figure measures, e.g. "pass@1 %".
	Metric string `json:"metric"`
}

// The bounds of a benchmark weight (category.schema.json says the same).
// Weights are relative: a smaller one would only lose the quality score's
// precision (at 5e-324 a score of 0.848 came out as 1).
const (
	MinWeight = 1e-6
	MaxWeight = 1000
)

// Category is a task category with the weights of the benchmarks that measure it.
type Category struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Weights     map[string]float64 `json:"weights"`
	// Rationale says, per weighted benchmark, why it has its weight.
	Rationale map[string]string `json:"rationale,omitempty"`
}

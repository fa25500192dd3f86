package registry

import (
	"encoding/json"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

// Request and reply bodies of the registry API (subjects under
// bus.RegistrySubjectPrefix, "orch.registry"). Models, categories and
// benchmarks travel as their catalog types, the config as selection.Config.
// Errors are micro errors whose body is a bus.ErrorBody.

// IDRequest names a model: models.get, models.delete.
type IDRequest struct {
	ID string `json:"id"`
}

// NameRequest names a category: categories.get, categories.delete.
type NameRequest struct {
	Name string `json:"name"`
}

// ModelPutReply answers models.put: the model's key and its new revision in
// orch_models (its current one when the put changed nothing).
type ModelPutReply struct {
	ID       string `json:"id"`
	Revision uint64 `json:"revision"`
}

// ModelDeleteReply answers models.delete.
type ModelDeleteReply struct {
	ID string `json:"id"`
}

// CategoryPutReply answers categories.put, like ModelPutReply.
type CategoryPutReply struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
}

// CategoryDeleteReply answers categories.delete.
type CategoryDeleteReply struct {
	Name string `json:"name"`
}

// WeightRequest is weights.set: the weight of a declared benchmark in a
// category (the seed's setBenchmarkWeight); weight 0 stops weighing it. The
// reply is the updated catalog.Category.
type WeightRequest struct {
	Category  string   `json:"category"`
	Benchmark string   `json:"benchmark"`
	Weight    *float64 `json:"weight"`
}

// ConfigPutReply answers config.put: the config's new revision in orch_config.
type ConfigPutReply struct {
	Revision uint64 `json:"revision"`
}

// ImportRequest is import: a whole MODEL_REGISTRY.json and task_categories.json.
type ImportRequest struct {
	Registry   json.RawMessage `json:"registry"`
	Categories json.RawMessage `json:"categories"`
}

// ImportReply answers import: how many models, categories and benchmarks the
// registry now holds, and how many models and categories it dropped.
type ImportReply struct {
	Models            int `json:"models"`
	Categories        int `json:"categories"`
	Benchmarks        int `json:"benchmarks"`
	RemovedModels     int `json:"removed_models"`
	RemovedCategories int `json:"removed_categories"`
}

// ExportReply answers export: the registry as its two documents.
type ExportReply struct {
	Registry   catalog.RegistryFile   `json:"registry"`
	Categories catalog.CategoriesFile `json:"categories"`
}

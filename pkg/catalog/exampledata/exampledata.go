// Package exampledata holds the example model registry and task categories that
// the all-in-one orchestrator seeds into its buckets on first start and that the
// tests use. The benchmark figures are the ones published by each model's maker
// (see README.md for sources, weight rationales and how gpu_memory_mb was
// estimated).
package exampledata

import _ "embed" // for the go:embed directives below

// RegistryFile and CategoriesFile are the file names the data is shipped under,
// the names the seed's ModelSelector loads.
const (
	RegistryFile   = "MODEL_REGISTRY.json"
	CategoriesFile = "task_categories.json"
)

// Registry is MODEL_REGISTRY.json: a catalog.RegistryFile document.
//
//go:embed MODEL_REGISTRY.json
var Registry []byte

// Categories is task_categories.json: a catalog.CategoriesFile document.
//
//go:embed task_categories.json
var Categories []byte

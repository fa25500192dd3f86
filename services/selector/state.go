package selector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// snapshot is what the request path reads: an engine and a fleet compiled by
// that engine, swapped together so they always match.
type snapshot struct {
	engine *selection.Engine
	fleet  *selection.Fleet
	// telemetryVersion is the telemetry cache version the fleet reflects.
	telemetryVersion uint64
}

// benchmarksKey is the categories-bucket key holding the declared benchmarks
// (category names cannot start with "_").
const benchmarksKey = "_benchmarks"

// registryState accumulates the KV watchers' updates until the next rebuild.
type registryState struct {
	mu         sync.Mutex
	models     map[string]catalog.Model
	categories map[string]catalog.Category
	benchmarks []catalog.Benchmark
	config     *selection.Config
}

func newRegistryState() *registryState {
	return &registryState{models: map[string]catalog.Model{}, categories: map[string]catalog.Category{}}
}

// applyModel records a put (value != nil) or delete of a model key.
func (r *registryState) applyModel(key string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if value == nil {
		delete(r.models, key)
		return nil
	}
	var m catalog.Model
	if err := json.Unmarshal(value, &m); err != nil {
		return err
	}
	r.models[key] = m
	return nil
}

// applyCategory records a put or delete in the categories bucket.
func (r *registryState) applyCategory(key string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == benchmarksKey {
		var b []catalog.Benchmark
		if value != nil {
			if err := json.Unmarshal(value, &b); err != nil {
				return err
			}
		}
		r.benchmarks = b
		return nil
	}
	if value == nil {
		delete(r.categories, key)
		return nil
	}
	var c catalog.Category
	if err := json.Unmarshal(value, &c); err != nil {
		return err
	}
	r.categories[key] = c
	return nil
}

// applyConfig records the selection config (nil value: back to defaults).
func (r *registryState) applyConfig(value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if value == nil {
		r.config = nil
		return nil
	}
	cfg := selection.DefaultConfig()
	if err := json.Unmarshal(value, &cfg); err != nil {
		return err
	}
	r.config = &cfg
	return nil
}

// build validates the accumulated registry into an engine.
func (r *registryState) build() (*selection.Engine, error) {
	r.mu.Lock()
	models := make([]catalog.Model, 0, len(r.models))
	for _, m := range r.models {
		models = append(models, m)
	}
	categories := make([]catalog.Category, 0, len(r.categories))
	for _, c := range r.categories {
		categories = append(categories, c)
	}
	benchmarks := slices.Clone(r.benchmarks)
	cfg := selection.DefaultConfig()
	if r.config != nil {
		cfg = *r.config
	}
	r.mu.Unlock()
	if len(models) == 0 {
		return nil, fmt.Errorf("%w: the registry has no models", ErrNotReady)
	}
	slices.SortFunc(models, func(a, b catalog.Model) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(categories, func(a, b catalog.Category) int { return strings.Compare(a.Name, b.Name) })
	cat, err := catalog.New(benchmarks, categories, models)
	if err != nil {
		return nil, err
	}
	return selection.NewEngine(cat, cfg)
}

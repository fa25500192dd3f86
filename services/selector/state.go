package selector

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// applied is the newest revision per KV bucket the engine reflects.
	applied map[string]uint64
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
	// lastCatalog is the newest catalog that compiled. While the buckets hold
	// an invalid one (written around the registry), config changes - the
	// rollback switches - still apply on top of it.
	lastCatalog *catalog.Catalog
	// revisions is the newest KV revision read per bucket.
	revisions map[string]uint64
}

func newRegistryState() *registryState {
	return &registryState{models: map[string]catalog.Model{}, categories: map[string]catalog.Category{}, revisions: map[string]uint64{}}
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
	// Checked like the registry checks a write, so that a value put into the
	// bucket directly cannot switch on what the registry would refuse.
	cfg, err := selection.ParseConfig(value)
	if err != nil {
		return err
	}
	r.config = &cfg
	return nil
}

// read records that a bucket's entry at revision rev was read (applied or
// refused): a build after it reflects that revision.
func (r *registryState) read(bucket string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revisions[bucket] = max(r.revisions[bucket], rev)
}

// build compiles the accumulated registry and config into an engine, and
// returns the bucket revisions it reflects. When the catalog is invalid but
// an earlier one compiled, it returns an engine of that catalog with the
// current config together with the catalog's error.
func (r *registryState) build() (*selection.Engine, map[string]uint64, error) {
	r.mu.Lock()
	revisions := maps.Clone(r.revisions)
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
	last := r.lastCatalog
	r.mu.Unlock()

	cat, catErr := compileCatalog(benchmarks, categories, models)
	if catErr == nil {
		r.mu.Lock()
		r.lastCatalog = cat
		r.mu.Unlock()
	} else if cat = last; cat == nil {
		return nil, nil, catErr
	}
	eng, err := selection.NewEngine(cat, cfg)
	if err != nil {
		return nil, nil, errors.Join(catErr, err)
	}
	return eng, revisions, catErr
}

func compileCatalog(benchmarks []catalog.Benchmark, categories []catalog.Category, models []catalog.Model) (*catalog.Catalog, error) {
	if len(models) == 0 {
		return nil, fmt.Errorf("%w: the registry has no models", ErrNotReady)
	}
	slices.SortFunc(models, func(a, b catalog.Model) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(categories, func(a, b catalog.Category) int { return strings.Compare(a.Name, b.Name) })
	return catalog.New(benchmarks, categories, models)
}

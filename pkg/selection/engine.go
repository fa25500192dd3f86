// Package selection is the pure selection engine: given a registry snapshot,
// a config, a telemetry snapshot and a request, it picks a model (and a GPU)
// and says why. Nothing here talks to the network.
//
// The pipeline is filter -> score -> pick. Per-category quality and
// confidence are computed when the engine is built (on registry or config
// change), so a request only filters, places and picks, pruning candidates
// by score bounds instead of scoring every (model, GPU) pair.
package selection

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

// Engine is an immutable compiled (catalog, config) pair, safe for
// concurrent use. Build a new one when either changes.
type Engine struct {
	cfg        Config
	catalog    *catalog.Catalog
	categories map[string]*rankedCategory
	params     placementParams
	placers    [3]weightedPlacer
	// headroomShare is the headroom weight's share of the placement score.
	headroomShare float64
	scratch       sync.Pool
}

type weightedPlacer struct {
	scorer PlacementScorer
	weight float64
}

// rankedModel is a model with its precomputed model scores for one category.
type rankedModel struct {
	model      *catalog.Model
	quality    float64
	confidence float64
	confKind   confidenceKind
	// rank is the mode's model score: quality x confidence (multi_category,
	// gpu_aware) or quality alone (benchmark). Lists are sorted by it.
	rank float64
}

// rankedCategory holds the candidate lists of one category, best first.
type rankedCategory struct {
	category *catalog.Category
	// multi: every enabled model listing the category.
	multi []rankedModel
	// benchmark: enabled models whose primary category it is.
	benchmark []rankedModel
}

// NewEngine validates cfg and compiles the catalog for it.
func NewEngine(cat *catalog.Catalog, cfg Config) (*Engine, error) {
	if cat == nil {
		return nil, fmt.Errorf("%w: no catalog", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:        cfg,
		catalog:    cat,
		categories: make(map[string]*rankedCategory, len(cat.Categories)),
		params: placementParams{
			weights:      cfg.Placement,
			ideal:        cfg.IdealTemperatureC,
			max:          cfg.MaxTemperatureC,
			staleAfterNs: cfg.StaleAfter().Nanoseconds(),
		},
		placers: [3]weightedPlacer{
			{UtilizationScorer{}, cfg.Placement.Utilization},
			{HeadroomScorer{}, cfg.Placement.Headroom},
			{TemperatureScorer{Ideal: cfg.IdealTemperatureC, Max: cfg.MaxTemperatureC}, cfg.Placement.Temperature},
		},
	}
	e.headroomShare = cfg.Placement.Headroom / (cfg.Placement.Utilization + cfg.Placement.Headroom + cfg.Placement.Temperature)
	e.scratch.New = func() any { return new(scratch) }
	quality := ModelScorer(QualityScorer{})
	conf := ConfidenceScorer{Values: cfg.Confidence}
	for i := range cat.Categories {
		c := &cat.Categories[i]
		rc := &rankedCategory{category: c}
		for j := range cat.Models {
			m := &cat.Models[j]
			if m.Disabled || !m.Serves(c.Name) {
				continue
			}
			q := 1.0 // benchmark scoring switched off: every model is equally good
			if cfg.BenchmarkScoring {
				q = quality.ScoreModel(c, m)
			}
			cv, kind := conf.classify(c.Name, m)
			cv = clamp01(cv)
			rc.multi = append(rc.multi, rankedModel{model: m, quality: q, confidence: cv, confKind: kind, rank: q * cv})
			if m.PrimaryCategory() == c.Name {
				rc.benchmark = append(rc.benchmark, rankedModel{model: m, quality: q, confidence: 1, confKind: kind, rank: q})
			}
		}
		sortRanked(rc.multi)
		sortRanked(rc.benchmark)
		e.categories[c.Name] = rc
	}
	return e, nil
}

// sortRanked orders by rank, best first; ids break ties so the order is
// deterministic.
func sortRanked(list []rankedModel) {
	slices.SortFunc(list, func(a, b rankedModel) int {
		if c := cmp.Compare(b.rank, a.rank); c != 0 {
			return c
		}
		return cmp.Compare(a.model.ID, b.model.ID)
	})
}

// Config returns the engine's config.
func (e *Engine) Config() Config { return e.cfg }

// Catalog returns the catalog the engine was built from.
func (e *Engine) Catalog() *catalog.Catalog { return e.catalog }

// placement is the weighted placement score of needMB on g with freeMB
// available, and its parts (utilization, headroom, temperature).
func (e *Engine) placement(g *GPU, freeMB, needMB int64) (float64, [3]float64) {
	var parts [3]float64
	var sum, total float64
	for i, p := range e.placers {
		parts[i] = p.scorer.ScorePlacement(g, freeMB, needMB)
		sum += p.weight * parts[i]
		total += p.weight
	}
	return clamp01(sum / total), parts
}

package selection

import "github.com/nlocalmodels/orchestrator/pkg/catalog"

// Scorers return a value in [0,1]; how much each counts is decided by the
// engine, never inside a scorer.

// ModelScorer scores a model for a category. Model scorers run when the
// registry or the config changes, not per request.
type ModelScorer interface {
	Name() string
	ScoreModel(c *catalog.Category, m *catalog.Model) float64
}

// PlacementScorer scores placing a model that needs needMB on a GPU that has
// freeMB available (free memory less reservations). It runs per request, so it
// must not allocate.
type PlacementScorer interface {
	Name() string
	ScorePlacement(g *GPU, freeMB, needMB int64) float64
}

// QualityScorer is the category-weighted benchmark quality:
// sum(weight x score/100) / sum(weight) over the category's benchmarks. A
// benchmark the model does not report counts as 0, so missing coverage lowers
// the score by the weight it lacks and never raises it.
type QualityScorer struct{}

func (QualityScorer) Name() string { return "quality" }

func (QualityScorer) ScoreModel(c *catalog.Category, m *catalog.Model) float64 {
	var sum, total float64
	for bench, w := range c.Weights {
		total += w
		if s, ok := m.Benchmarks[bench]; ok {
			sum += w * clamp01(s/100)
		}
	}
	if total <= 0 {
		return 0
	}
	return clamp01(sum / total)
}

// ConfidenceScorer is the seed's multi-category confidence: single-category
// models, the primary category and secondary categories get the configured
// values unless the model overrides the category.
type ConfidenceScorer struct{ Values ConfidenceConfig }

func (ConfidenceScorer) Name() string { return "confidence" }

func (s ConfidenceScorer) ScoreModel(c *catalog.Category, m *catalog.Model) float64 {
	v, _ := s.classify(c.Name, m)
	return clamp01(v)
}

// confidenceKind says which confidence rule applied, for the reason line.
type confidenceKind uint8

const (
	confidenceSingle confidenceKind = iota
	confidencePrimary
	confidenceSecondary
	confidenceOverride
)

func (k confidenceKind) String() string {
	switch k {
	case confidenceSingle:
		return "single-category model"
	case confidencePrimary:
		return "primary category"
	case confidenceSecondary:
		return "secondary category"
	default:
		return "per-model override"
	}
}

func (s ConfidenceScorer) classify(category string, m *catalog.Model) (float64, confidenceKind) {
	if v, ok := m.Confidence[category]; ok {
		return v, confidenceOverride
	}
	switch {
	case len(m.OrchestrationCategories) == 1:
		return s.Values.SingleCategory, confidenceSingle
	case m.PrimaryCategory() == category:
		return s.Values.Primary, confidencePrimary
	default:
		return s.Values.Secondary, confidenceSecondary
	}
}

// UtilizationScorer prefers idle GPUs: 1 - utilisation.
type UtilizationScorer struct{}

func (UtilizationScorer) Name() string { return "utilization" }

func (UtilizationScorer) ScorePlacement(g *GPU, _, _ int64) float64 {
	if g.utilizationUnknown {
		return unknownReadingScore
	}
	return clamp01(1 - g.Sample.UtilizationGPUPct/100)
}

// unknownReadingScore scores a reading the agent failed to make: neither
// good nor bad, so that a GPU whose sensor did not answer is not taken for
// the idlest or the coolest.
const unknownReadingScore = 0.5

// HeadroomScorer prefers GPUs with memory left after the model is placed:
// the fraction of the GPU's memory still free afterwards.
type HeadroomScorer struct{}

func (HeadroomScorer) Name() string { return "headroom" }

func (HeadroomScorer) ScorePlacement(g *GPU, freeMB, needMB int64) float64 {
	if g.Sample.MemoryTotalMB <= 0 {
		return 0
	}
	return clamp01(float64(freeMB-needMB) / float64(g.Sample.MemoryTotalMB))
}

// TemperatureScorer prefers cool GPUs: 1 at or below Ideal, falling linearly
// to 0 at Max.
type TemperatureScorer struct{ Ideal, Max float64 }

func (TemperatureScorer) Name() string { return "temperature" }

func (s TemperatureScorer) ScorePlacement(g *GPU, _, _ int64) float64 {
	if g.temperatureUnknown {
		return unknownReadingScore
	}
	t := g.Sample.TemperatureC
	if t <= s.Ideal {
		return 1
	}
	return clamp01((s.Max - t) / (s.Max - s.Ideal))
}

// clamp01 also maps NaN to 0 so a bad reading can never win.
func clamp01(v float64) float64 {
	if !(v > 0) {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

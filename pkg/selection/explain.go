package selection

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// NoCandidateError says why nothing was selected: how many models and GPUs
// each filter rejected. It wraps ErrNoCandidate.
type NoCandidateError struct {
	TaskCategory string `json:"task_category"`
	Mode         Mode   `json:"mode"`
	// Models is how many models serve the category in this mode; GPUs how
	// many GPUs the fleet holds (gpu_aware only).
	Models int `json:"models"`
	GPUs   int `json:"gpus"`
	// ModelRejects and GPURejects count rejections by filter name.
	ModelRejects map[string]int `json:"model_rejects,omitempty"`
	GPURejects   map[string]int `json:"gpu_rejects,omitempty"`
	// MemoryMisfits counts (model, GPU) pairs where the GPU lacked the
	// model's memory, after reservations.
	MemoryMisfits int `json:"memory_misfits,omitempty"`
}

func (e *NoCandidateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s for task_category %q in %s mode: ", ErrNoCandidate, e.TaskCategory, e.Mode)
	if e.Models == 0 {
		b.WriteString("no enabled model serves it in this mode")
		return b.String()
	}
	fmt.Fprintf(&b, "%d models", e.Models)
	writeCounts(&b, e.ModelRejects)
	if e.Mode == ModeGPUAware {
		fmt.Fprintf(&b, "; %d GPUs", e.GPUs)
		writeCounts(&b, e.GPURejects)
		if e.MemoryMisfits > 0 {
			fmt.Fprintf(&b, "; %d model/GPU pairs lacked free memory", e.MemoryMisfits)
		}
	}
	return b.String()
}

func (e *NoCandidateError) Unwrap() error { return ErrNoCandidate }

func writeCounts(b *strings.Builder, counts map[string]int) {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if i == 0 {
			b.WriteString(", rejected by ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(b, "%s: %d", n, counts[n])
	}
}

func (e *Engine) noCandidate(s *scratch, res *Result, models int, f *Fleet) error {
	err := &NoCandidateError{TaskCategory: s.q.Request.TaskCategory, Mode: res.Mode, Models: models}
	for i, flt := range s.modelFilters {
		if s.modelRejects[i] > 0 {
			if err.ModelRejects == nil {
				err.ModelRejects = map[string]int{}
			}
			err.ModelRejects[flt.Name()] = s.modelRejects[i]
		}
	}
	if res.Mode == ModeGPUAware {
		err.GPUs = f.Len()
		err.MemoryMisfits = s.memoryMisfits
		for i, flt := range s.gpuFilters {
			if s.gpuRejects[i] > 0 {
				if err.GPURejects == nil {
					err.GPURejects = map[string]int{}
				}
				err.GPURejects[flt.Name()] = s.gpuRejects[i]
			}
		}
	}
	return err
}

// validateRequest checks what a schema cannot express cheaply; every
// problem is reported.
func validateRequest(r *Request) error {
	var problems []string
	if r.TaskCategory == "" {
		problems = append(problems, "task_category is empty")
	}
	if r.Mode != "" && !r.Mode.Valid() {
		problems = append(problems, fmt.Sprintf("mode %q is not benchmark, multi_category or gpu_aware", r.Mode))
	}
	c := &r.Constraints
	if c.MaxGPUMemoryMB < 0 {
		problems = append(problems, fmt.Sprintf("constraints.max_gpu_memory_mb %d is negative", c.MaxGPUMemoryMB))
	}
	if c.MinContextLength < 0 {
		problems = append(problems, fmt.Sprintf("constraints.min_context_length %d is negative", c.MinContextLength))
	}
	if !inRange(c.MinScore, 0, 1) {
		problems = append(problems, fmt.Sprintf("constraints.min_score %v is outside 0..1", c.MinScore))
	}
	if !inRange(c.MaxTemperatureC, 0, 200) {
		problems = append(problems, fmt.Sprintf("constraints.max_temperature_c %v is outside 0..200", c.MaxTemperatureC))
	}
	if !inRange(c.MaxUtilizationPct, 0, 100) {
		problems = append(problems, fmt.Sprintf("constraints.max_utilization_pct %v is outside 0..100", c.MaxUtilizationPct))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidRequest, strings.Join(problems, "; "))
}

func inRange(v, lo, hi float64) bool { return !math.IsNaN(v) && v >= lo && v <= hi }

// reason writes the one-line explanation into the scratch buffer and makes
// it the result's only string allocation.
func (e *Engine) reason(s *scratch, res *Result, c candidate) string {
	b := s.buf[:0]
	if res.Degraded {
		b = append(b, "degraded to "...)
		b = append(b, res.Mode...)
		b = append(b, ": no fresh GPU telemetry"...)
		if res.TelemetryAgeMs >= 0 {
			b = append(b, " (newest sample "...)
			b = strconv.AppendFloat(b, res.TelemetryAgeMs/1000, 'f', 1, 64)
			b = append(b, " s old)"...)
		}
		b = append(b, "; "...)
	}
	if res.Downgrade != "" {
		b = append(b, res.Mode...)
		b = append(b, " because "...)
		b = append(b, res.Downgrade...)
		b = append(b, "; "...)
	}
	b = append(b, res.Model.ID...)
	if res.GPU != nil {
		b = append(b, " on "...)
		b = append(b, res.GPU.Key...)
		if res.GPU.Sample.Name != "" {
			b = append(b, " ("...)
			b = append(b, res.GPU.Sample.Name...)
			b = append(b, ')')
		}
	}
	b = append(b, ": quality "...)
	b = strconv.AppendFloat(b, c.rm.quality, 'f', 3, 64)
	if !e.cfg.BenchmarkScoring {
		b = append(b, " (benchmark scoring off)"...)
	}
	if res.Mode != ModeBenchmark {
		b = append(b, " x confidence "...)
		b = strconv.AppendFloat(b, c.rm.confidence, 'f', 2, 64)
		b = append(b, " ("...)
		b = append(b, c.rm.confKind.String()...)
		b = append(b, ')')
	}
	if res.GPU != nil {
		g := &res.GPU.Sample
		b = append(b, " x placement "...)
		b = strconv.AppendFloat(b, c.placement, 'f', 3, 64)
		b = append(b, " (util "...)
		if res.GPU.utilizationUnknown {
			b = append(b, "unknown"...)
		} else {
			b = strconv.AppendFloat(b, g.UtilizationGPUPct, 'f', 0, 64)
			b = append(b, '%')
		}
		b = append(b, ", "...)
		b = strconv.AppendFloat(b, c.parts[1]*float64(g.MemoryTotalMB)/1024, 'f', 1, 64)
		b = append(b, " GiB free after load, "...)
		if res.GPU.temperatureUnknown {
			b = append(b, "temperature unknown)"...)
		} else {
			b = strconv.AppendFloat(b, g.TemperatureC, 'f', 0, 64)
			b = append(b, " C)"...)
		}
	}
	b = append(b, " = "...)
	b = strconv.AppendFloat(b, c.score, 'f', 3, 64)
	b = append(b, "; "...)
	b = strconv.AppendInt(b, int64(res.Candidates), 10)
	b = append(b, " scored"...)
	if res.Ties > 1 {
		b = append(b, ", picked at random among "...)
		b = strconv.AppendInt(b, int64(res.Ties), 10)
		b = append(b, " near-ties"...)
	}
	s.buf = b
	return string(b)
}

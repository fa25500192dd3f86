package exampledata

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

// decodeStrict decodes exactly one JSON document, rejecting unknown fields and
// trailing data, so a typo in a field name cannot silently drop a value.
func decodeStrict(t *testing.T, name string, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: trailing data after the document (err %v)", name, err)
	}
}

func load(t *testing.T) (catalog.RegistryFile, catalog.CategoriesFile) {
	t.Helper()
	var reg catalog.RegistryFile
	var cats catalog.CategoriesFile
	decodeStrict(t, RegistryFile, Registry, &reg)
	decodeStrict(t, CategoriesFile, Categories, &cats)
	return reg, cats
}

func TestEmbeddedMatchesFiles(t *testing.T) {
	tests := []struct {
		file     string
		embedded []byte
	}{
		{RegistryFile, Registry},
		{CategoriesFile, Categories},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			onDisk, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, tt.embedded) {
				t.Errorf("embedded %s differs from the file on disk", tt.file)
			}
		})
	}
}

func TestVersionAndSizes(t *testing.T) {
	reg, cats := load(t)
	if reg.Version != 1 || cats.Version != 1 {
		t.Errorf("versions = %d, %d; want 1, 1", reg.Version, cats.Version)
	}
	tests := []struct {
		what     string
		got, min int
	}{
		{"models", len(reg.Models), 12},
		{"categories", len(cats.Categories), 6},
		{"benchmarks", len(cats.Benchmarks), 16},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			if tt.got < tt.min {
				t.Errorf("%s = %d, want >= %d", tt.what, tt.got, tt.min)
			}
		})
	}
}

func TestBenchmarksDeclared(t *testing.T) {
	_, cats := load(t)
	seen := map[string]bool{}
	for _, b := range cats.Benchmarks {
		t.Run(b.Name, func(t *testing.T) {
			if b.Name == "" || strings.TrimSpace(b.Description) == "" || strings.TrimSpace(b.Metric) == "" {
				t.Errorf("benchmark %+v needs a name, description and metric", b)
			}
			if seen[b.Name] {
				t.Errorf("benchmark %q declared twice", b.Name)
			}
			seen[b.Name] = true
		})
	}
}

func TestCategories(t *testing.T) {
	reg, cats := load(t)
	declared := map[string]bool{}
	for _, b := range cats.Benchmarks {
		declared[b.Name] = true
	}
	weighted := map[string]bool{}
	names := map[string]bool{}
	for _, c := range cats.Categories {
		t.Run(c.Name, func(t *testing.T) {
			if names[c.Name] {
				t.Errorf("category %q declared twice", c.Name)
			}
			names[c.Name] = true
			if strings.TrimSpace(c.Description) == "" {
				t.Error("empty description")
			}
			if len(c.Weights) == 0 {
				t.Error("no weights")
			}
			for bench, w := range c.Weights {
				weighted[bench] = true
				if !declared[bench] {
					t.Errorf("weight on undeclared benchmark %q", bench)
				}
				if w <= 0 {
					t.Errorf("weight %s = %v, want > 0", bench, w)
				}
				if strings.TrimSpace(c.Rationale[bench]) == "" {
					t.Errorf("weight %s has no rationale", bench)
				}
			}
			for bench := range c.Rationale {
				if _, ok := c.Weights[bench]; !ok {
					t.Errorf("rationale for %q, which has no weight", bench)
				}
			}
			served := false
			for i := range reg.Models {
				served = served || reg.Models[i].Serves(c.Name)
			}
			if !served {
				t.Error("no model serves this category")
			}
		})
	}
	// A declared benchmark no category weighs would never influence a selection.
	for name := range declared {
		if !weighted[name] {
			t.Errorf("benchmark %q is declared but no category weighs it", name)
		}
	}
}

// TestSeedWeights pins the weights the Phase 5 seed hard-coded in
// benchmark_scoring.zig.
func TestSeedWeights(t *testing.T) {
	_, cats := load(t)
	byName := map[string]catalog.Category{}
	for _, c := range cats.Categories {
		byName[c.Name] = c
	}
	tests := []struct {
		category, benchmark string
		weight              float64
	}{
		{"code", "HumanEval", 1.0},
		{"code", "MBPP", 0.8},
		{"math", "GSM8K", 1.2},
		{"math", "MATH", 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.category+"/"+tt.benchmark, func(t *testing.T) {
			c, ok := byName[tt.category]
			if !ok {
				t.Fatalf("category %q missing", tt.category)
			}
			got, ok := c.Weights[tt.benchmark]
			if !ok || got != tt.weight {
				t.Errorf("weight = %v (present %v), want %v", got, ok, tt.weight)
			}
		})
	}
}

func TestModels(t *testing.T) {
	reg, cats := load(t)
	categories := map[string]bool{}
	for _, c := range cats.Categories {
		categories[c.Name] = true
	}
	declared := map[string]bool{}
	for _, b := range cats.Benchmarks {
		declared[b.Name] = true
	}
	ids := map[string]bool{}
	for i := range reg.Models {
		m := &reg.Models[i]
		t.Run(m.ID, func(t *testing.T) {
			if m.ID == "" || ids[m.ID] {
				t.Errorf("id %q is empty or not unique", m.ID)
			}
			ids[m.ID] = true
			if m.Name == "" || m.Family == "" || m.Quantization == "" {
				t.Errorf("name %q, family %q, quantization %q must all be set", m.Name, m.Family, m.Quantization)
			}
			if strings.TrimSpace(m.Source) == "" {
				t.Error("no source for the benchmark figures")
			}
			if m.License == "" {
				t.Error("no license")
			}
			if m.ParametersB <= 0 || m.GPUMemoryMB <= 0 || m.ContextLength <= 0 {
				t.Errorf("parameters_b %v, gpu_memory_mb %d, context_length %d must be > 0",
					m.ParametersB, m.GPUMemoryMB, m.ContextLength)
			}
			if m.Disabled {
				t.Error("example models ship enabled")
			}
			if len(m.OrchestrationCategories) == 0 {
				t.Error("no orchestration categories")
			}
			listed := map[string]bool{}
			for _, c := range m.OrchestrationCategories {
				if !categories[c] {
					t.Errorf("category %q is not declared", c)
				}
				if listed[c] {
					t.Errorf("category %q listed twice", c)
				}
				listed[c] = true
			}
			if len(m.Benchmarks) == 0 {
				t.Error("no benchmark figures")
			}
			for bench, score := range m.Benchmarks {
				if !declared[bench] {
					t.Errorf("figure for undeclared benchmark %q", bench)
				}
				if score < 0 || score > 100 {
					t.Errorf("%s = %v, want 0..100", bench, score)
				}
			}
			for c, v := range m.Confidence {
				if !listed[c] {
					t.Errorf("confidence override for %q, which the model does not serve", c)
				}
				if v < 0 || v > 1 {
					t.Errorf("confidence %s = %v, want 0..1", c, v)
				}
			}
		})
	}
}

// TestQuantizedBuildsShareFigures: every build of one model reuses the
// full-precision published figures (quantization loss is not modelled), so the
// builds of a model may differ only in quantization, memory and id.
func TestQuantizedBuildsShareFigures(t *testing.T) {
	reg, _ := load(t)
	first := map[string]*catalog.Model{}
	for i := range reg.Models {
		m := &reg.Models[i]
		base, _, _ := strings.Cut(m.Name, " (")
		ref, ok := first[base]
		if !ok {
			first[base] = m
			continue
		}
		t.Run(m.ID, func(t *testing.T) {
			a, _ := json.Marshal(ref.Benchmarks)
			b, _ := json.Marshal(m.Benchmarks)
			if !bytes.Equal(a, b) {
				t.Errorf("figures %s differ from %s's %s", b, ref.ID, a)
			}
			if ref.Family != m.Family || ref.ParametersB != m.ParametersB || ref.ContextLength != m.ContextLength ||
				ref.Source != m.Source || ref.License != m.License {
				t.Errorf("model facts differ from %s", ref.ID)
			}
			if ref.Quantization == m.Quantization {
				t.Errorf("same quantization %q as %s", m.Quantization, ref.ID)
			}
		})
	}
}

// TestCodeCandidatesAroundSixteenGiB keeps the seed's integration scenario
// (select for code with max_gpu_memory_mb 16384) meaningful: the cap must
// both admit and exclude several code models.
func TestCodeCandidatesAroundSixteenGiB(t *testing.T) {
	reg, _ := load(t)
	const limit = 16 * 1024
	var under, over int
	for i := range reg.Models {
		m := &reg.Models[i]
		if !m.Serves("code") {
			continue
		}
		if m.GPUMemoryMB <= limit {
			under++
		} else {
			over++
		}
	}
	if under < 3 || over < 3 {
		t.Errorf("code models: %d within %d MB and %d above, want >= 3 each", under, limit, over)
	}
}

package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func TestSelect(t *testing.T) {
	ts := startSystem(t)
	tests := []cliCase{
		{
			name: "human", args: []string{"select", "--category", "code"},
			stdout: []string{"model:", "gpu:", "final score:", "scores:", "quality", "placement", "reason:", "telemetry age:", "duration:", "alternatives:"},
		},
		{
			name: "json, GPU-aware", args: []string{"select", "--category", "code", "--request-id", "r-1", "--json"},
			check: func(t *testing.T, out string) {
				var rep selection.Reply
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatal(err)
				}
				if rep.RequestID != "r-1" || rep.Mode != selection.ModeGPUAware || rep.GPU == nil || rep.Degraded {
					t.Fatalf("reply = %+v, want a GPU-aware placement for r-1", rep)
				}
			},
		},
		{
			name: "constraints",
			args: []string{"select", "--category", "code", "--mode", "multi_category", "--max-memory-mb", "16384",
				"--quantization", "q4_k_m", "--deny", "qwen2.5-coder-14b-instruct-q4_k_m", "--min-context", "8192", "--json"},
			check: func(t *testing.T, out string) {
				var rep selection.Reply
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatal(err)
				}
				if rep.Mode != selection.ModeMultiCategory || rep.GPU != nil || rep.GPUMemoryMB > 16384 ||
					rep.Quantization != "q4_k_m" || rep.ModelID == "qwen2.5-coder-14b-instruct-q4_k_m" {
					t.Fatalf("reply = %+v breaks the constraints", rep)
				}
			},
		},
		{
			name: "GPU constraints", args: []string{"select", "--category", "math", "--max-util", "100", "--max-temp", "99", "--host", "nowhere"},
			code: 1, stderr: []string{"422", "rejected by hosts"},
		},
		{name: "unknown category", args: []string{"select", "--category", "cooking"}, code: 1, stderr: []string{"404", "unknown task category", "code, general"}},
		{
			name: "nothing fits", args: []string{"select", "--category", "code", "--max-memory-mb", "100"},
			code: 1, stderr: []string{"422", "rejected by max_gpu_memory_mb"},
		},
		{name: "out of range", args: []string{"select", "--category", "code", "--min-score", "2"}, code: 1, stderr: []string{"400", "min_score"}},
		{name: "no category", args: []string{"select"}, code: 2, stderr: []string{"--category is required", "--help"}},
		{name: "bad mode", args: []string{"select", "--category", "code", "--mode", "fast"}, code: 2, stderr: []string{"fast"}},
		{name: "bad flag", args: []string{"select", "--category", "code", "--max-util", "lots"}, code: 2, stderr: []string{"max-util"}},
		{name: "NaN flag", args: []string{"select", "--category", "code", "--min-score", "NaN"}, code: 2, stderr: []string{"--min-score", "finite"}},
		{name: "infinite flag", args: []string{"select", "--category", "code", "--max-temp", "Inf"}, code: 2, stderr: []string{"--max-temp", "finite"}},
		{name: "zero timeout", args: []string{"--timeout", "0s", "select", "--category", "code"}, code: 2, stderr: []string{"--timeout", "positive"}},
		{name: "unknown verb", args: []string{"frobnicate"}, code: 2, stderr: []string{"unknown command", "--help"}},
		{name: "negative --show", args: []string{"whatif", "--config", "x.json", "--since", "1h", "--show", "-1"}, code: 2, stderr: []string{"--show -1"}},
	}
	ts.runCases(t, tests)
}

func TestNoServer(t *testing.T) {
	var out, errOut strings.Builder
	code := Execute(testCtx(t), []string{"--nats-url", "nats://127.0.0.1:1", "registry", "list"}, &out, &errOut, noEnv)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	mustContain(t, "stderr", errOut.String(), "cannot connect", "127.0.0.1:1", "orchestrator serve")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRegistry(t *testing.T) {
	ts := startSystem(t)
	newModel := `{"id": "test-model-q4", "name": "Test Model", "parameters_b": 7, "quantization": "q4_k_m",
 "gpu_memory_mb": 6000, "context_length": 32768, "orchestration_categories": ["math", "code"],
 "benchmarks": {"GSM8K": 80, "MATH": 50}, "source": "test"}`
	badModel := `{"id": "bad-model", "name": "Bad", "parameters_b": 7, "quantization": "q4_k_m",
 "gpu_memory_mb": -1, "context_length": 32768, "orchestration_categories": ["cooking"], "benchmarks": {}}`
	exportDir := t.TempDir()
	brokenCats := strings.Replace(string(exampledata.Categories), `"HumanEval": 1.0`, `"NoSuchBench": 1.0`, 1)
	if brokenCats == string(exampledata.Categories) {
		t.Fatal("the example categories lack the HumanEval weight this test breaks")
	}
	brokenPath := writeFile(t, "cats.json", brokenCats)
	steps := []cliCase{
		{name: "list models", args: []string{"registry", "list"}, stdout: []string{"qwen2.5-coder-7b-instruct-q4_k_m", "code,reasoning,math", "20 models"}},
		{name: "list categories", args: []string{"registry", "list", "categories"}, stdout: []string{"HumanEval 1, MBPP 0.8", "6 categories"}},
		{name: "list benchmarks", args: []string{"registry", "list", "benchmarks"}, stdout: []string{"LiveCodeBench", "pass@1"}},
		{name: "list what", args: []string{"registry", "list", "gpus"}, code: 2, stderr: []string{"models, categories or benchmarks"}},
		{
			name: "get model", args: []string{"registry", "get", "model", "qwen2.5-math-7b-instruct-bf16"},
			check: func(t *testing.T, out string) {
				var m catalog.Model
				if err := json.Unmarshal([]byte(out), &m); err != nil || m.ID != "qwen2.5-math-7b-instruct-bf16" || m.GPUMemoryMB <= 0 {
					t.Fatalf("get printed %s (%v)", out, err)
				}
			},
		},
		{
			name: "get category", args: []string{"registry", "get", "category", "code"},
			check: func(t *testing.T, out string) {
				var c catalog.Category
				if err := json.Unmarshal([]byte(out), &c); err != nil || c.Weights["HumanEval"] != 1 {
					t.Fatalf("get printed %s (%v)", out, err)
				}
			},
		},
		{name: "get unknown model", args: []string{"registry", "get", "model", "nope"}, code: 1, stderr: []string{"404", "nope"}},
		{name: "get what", args: []string{"registry", "get", "gpu", "x"}, code: 2, stderr: []string{"model or category"}},
		{name: "put model", args: []string{"registry", "put", "model", writeFile(t, "m.json", newModel)}, stdout: []string{"stored model test-model-q4 (revision"}},
		{name: "the new model is listed", args: []string{"registry", "list"}, stdout: []string{"test-model-q4", "21 models"}},
		{
			name: "put an invalid model", args: []string{"registry", "put", "model", writeFile(t, "bad.json", badModel)},
			code: 1, stderr: []string{"400", "\n  - ", "gpu_memory_mb", "source"},
		},
		{name: "put a file that is not JSON", args: []string{"registry", "put", "model", writeFile(t, "x.json", "id: x")}, code: 1, stderr: []string{"not JSON"}},
		{
			name: "put a model whose key is given twice", args: []string{"registry", "put", "model", writeFile(t, "dup.json", strings.Replace(newModel, `"id": "test-model-q4"`, `"id": "dup-first", "id": "test-model-q4"`, 1))},
			code: 1, stderr: []string{"400", `key "id" appears twice`},
		},
		{
			name: "put a category document as a model", args: []string{"registry", "put", "model", writeFile(t, "cat-as-model.json", `{"name": "x", "description": "d", "weights": {"MGSM": 1}}`)},
			code: 2, stderr: []string{"not a model document but a category", "registry put category"},
		},
		{
			name: "put a file larger than the server takes", args: []string{"registry", "put", "model", writeFile(t, "big.json", `{"id": "big", "name": "`+strings.Repeat("a", 1<<20)+`"}`)},
			code: 1, stderr: []string{"max_payload", "1.0 MiB", "big.json"},
		},
		{name: "put a missing file", args: []string{"registry", "put", "model", "/nonexistent/m.json"}, code: 1, stderr: []string{"no such file"}},
		{name: "delete model", args: []string{"registry", "delete", "model", "test-model-q4"}, stdout: []string{"deleted model test-model-q4"}},
		{name: "deleted is gone", args: []string{"registry", "get", "model", "test-model-q4"}, code: 1, stderr: []string{"404"}},
		{name: "delete a category in use", args: []string{"registry", "delete", "category", "code"}, code: 1, stderr: []string{"422", "code"}},
		{
			name: "put category", args: []string{"registry", "put", "category", writeFile(t, "c.json", `{"name": "translation", "description": "d", "weights": {"MGSM": 1}}`)},
			stdout: []string{"stored category translation (revision"},
		},
		{name: "the new category is listed", args: []string{"registry", "list", "categories"}, stdout: []string{"translation", "7 categories"}},
		{name: "delete category", args: []string{"registry", "delete", "category", "translation"}, stdout: []string{"deleted category translation"}},
		{
			name: "put a category weighing an undeclared benchmark", args: []string{"registry", "put", "category", writeFile(t, "c2.json", `{"name": "x", "description": "d", "weights": {"Nope": 1}}`)},
			code: 1, stderr: []string{"422", "Nope"},
		},
		{
			name: "export to a directory", args: []string{"registry", "export", "--out-dir", exportDir},
			stdout: []string{"wrote " + filepath.Join(exportDir, "MODEL_REGISTRY.json"), "20 models, 6 categories, 19 benchmarks"},
		},
		{
			name:   "import what was exported",
			args:   []string{"registry", "import", "--registry", filepath.Join(exportDir, "MODEL_REGISTRY.json"), "--categories", filepath.Join(exportDir, "task_categories.json")},
			stdout: []string{"20 models, 6 categories, 19 benchmarks (removed 0 models, 0 categories)"},
		},
		{
			name: "import a broken document changes nothing; its problems name the file given",
			args: []string{"registry", "import", "--registry", filepath.Join(exportDir, "MODEL_REGISTRY.json"), "--categories", brokenPath},
			code: 1, stderr: []string{"\n  - " + brokenPath + ":", "NoSuchBench"},
		},
		{
			name: "import with the files swapped",
			args: []string{"registry", "import", "--registry", filepath.Join(exportDir, "task_categories.json"), "--categories", filepath.Join(exportDir, "MODEL_REGISTRY.json")},
			code: 2, stderr: []string{"swap them"},
		},
		{
			name:   "import files saved with a byte order mark",
			args:   []string{"registry", "import", "--registry", writeFile(t, "reg-bom.json", "\ufeff"+string(exampledata.Registry)), "--categories", writeFile(t, "cats-bom.json", "\ufeff"+string(exampledata.Categories))},
			stdout: []string{"20 models, 6 categories"},
		},
		{name: "export into a file", args: []string{"registry", "export", "--out-dir", brokenPath}, code: 1, stderr: []string{"cannot write output", "--out-dir"}},
		{name: "still 20 models", args: []string{"registry", "list"}, stdout: []string{"20 models"}},
		{name: "import needs both files", args: []string{"registry", "import", "--registry", "x.json"}, code: 2, stderr: []string{"--categories"}},
		{
			name: "export as JSON", args: []string{"registry", "export"},
			check: func(t *testing.T, out string) {
				var doc struct {
					Registry   catalog.RegistryFile   `json:"registry"`
					Categories catalog.CategoriesFile `json:"categories"`
				}
				if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Registry.Models) != 20 || len(doc.Categories.Categories) != 6 {
					t.Fatalf("export printed %d models, %d categories (%v)", len(doc.Registry.Models), len(doc.Categories.Categories), err)
				}
			},
		},
	}
	ts.runCases(t, steps)
	r := ts.run(t, "registry", "put", "model", writeFile(t, "bad2.json", badModel))
	if r.code != 1 || strings.Contains(r.stderr, "bad request: bad request") {
		t.Fatalf("exit %d; the error should say its code's name once: %s", r.code, r.stderr)
	}
	r = ts.run(t, "registry", "import", "--registry", filepath.Join(exportDir, "MODEL_REGISTRY.json"), "--categories", brokenPath)
	if r.code != 1 || strings.Contains(r.stderr, catalog.CategoriesFileName) {
		t.Fatalf("exit %d; the error should name %s, not the registry's own name: %s", r.code, brokenPath, r.stderr)
	}
}

// TestWeightsSetChangesSelection is the seed's setBenchmarkWeight: a weight
// set through the CLI changes what the selector picks.
func TestWeightsSetChangesSelection(t *testing.T) {
	ts := startSystem(t)
	general := []string{"--category", "general", "--mode", "multi_category"}
	before := ts.selectJSON(t, general...)
	if !strings.HasPrefix(before.ModelID, "llama-3.1-70b-instruct") {
		t.Fatalf("general picks %s before the change, want a llama-3.1-70b build", before.ModelID)
	}
	r := ts.run(t, "weights", "set", "general", "TruthfulQA", "5")
	mustContain(t, "weights set", r.stdout, "general: TruthfulQA 0.5 -> 5")
	// set returns once the selector applied the weight: the very next
	// selection uses it.
	mustContain(t, "weights set stderr", r.stderr, "live on 1 selector(s)")
	if got := ts.selectJSON(t, general...).ModelID; got != "phi-3.5-mini-instruct-q4_k_m" {
		t.Fatalf("picked %s right after the set, want phi-3.5-mini-instruct-q4_k_m", got)
	}
	mustContain(t, "weights get", ts.ok(t, "weights", "get", "general"), "TruthfulQA", "MMLU-Pro")

	var weights map[string]map[string]float64
	if err := json.Unmarshal([]byte(ts.ok(t, "weights", "get", "--json")), &weights); err != nil || weights["general"]["TruthfulQA"] != 5 || len(weights) != 6 {
		t.Fatalf("weights get --json = %v (%v)", weights, err)
	}
	refused := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"undeclared benchmark", []string{"weights", "set", "general", "NoSuchBench", "1"}, 1, "NoSuchBench"},
		{"unknown category", []string{"weights", "set", "cooking", "MMLU", "1"}, 1, "404"},
		{"negative weight", []string{"weights", "set", "--", "general", "MMLU", "-1"}, 1, "MMLU"},
		{"not a number", []string{"weights", "set", "general", "MMLU", "lots"}, 2, "not a number"},
		{"NaN", []string{"weights", "set", "general", "MMLU", "NaN"}, 2, "finite"},
		{"negative weight without --", []string{"weights", "set", "general", "MMLU", "-1"}, 2, "put -- before the arguments"},
		{"weight too small to score", []string{"weights", "set", "general", "MMLU", "5e-324"}, 1, "from 1e-06 to 1000"},
		{"no reply in time", []string{"--timeout", "1ns", "weights", "set", "general", "MMLU", "2"}, 3, "may have been applied: look with `orchestrator weights get general`"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.run(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, tc.code, tc.want)
			}
		})
	}
	// Weight 0 removes the benchmark and its rationale: the rationale is shown.
	r = ts.run(t, "weights", "set", "general", "TruthfulQA", "0")
	mustContain(t, "weights set 0", r.stdout, "TruthfulQA 5 -> removed")
	mustContain(t, "weights set 0 stderr", r.stderr, "rationale went with it", "misconceptions")
}

// TestConfigRollback is the seed's rollback plan: one command turns GPU
// awareness off and the next selections are multi_category.
func TestConfigRollback(t *testing.T) {
	ts := startSystem(t)
	var cfg selection.Config
	if err := json.Unmarshal([]byte(ts.ok(t, "config", "get", "--json")), &cfg); err != nil || cfg != selection.DefaultConfig() {
		t.Fatalf("config get --json = %+v (%v), want the defaults", cfg, err)
	}
	mustContain(t, "config get", ts.ok(t, "config", "get"), "gpu_aware", "confidence.primary", "0.9")
	if rep := ts.selectJSON(t, "--category", "code"); rep.Mode != selection.ModeGPUAware {
		t.Fatalf("mode %s before the rollback", rep.Mode)
	}

	r := ts.run(t, "config", "set", "gpu_aware=false")
	mustContain(t, "config set", r.stdout, "gpu_aware: true -> false")
	mustContain(t, "config set stderr", r.stderr, "live on 1 selector(s)")
	// The very next selection is multi_category: set waited for the selector.
	if rep := ts.selectJSON(t, "--category", "code"); rep.Mode != selection.ModeMultiCategory || rep.RequestedMode != selection.ModeGPUAware || rep.GPU != nil || rep.Degraded {
		t.Fatalf("right after the rollback: mode %s (requested %s), gpu %+v, degraded %v", rep.Mode, rep.RequestedMode, rep.GPU, rep.Degraded)
	}

	tests := []cliCase{
		{name: "two values", args: []string{"config", "set", "confidence.primary=0.95", "tie_epsilon=0.02"}, stdout: []string{"confidence.primary: 0.9 -> 0.95", "tie_epsilon: 0.01 -> 0.02"}},
		{name: "same again", args: []string{"config", "set", "tie_epsilon=0.02"}, stdout: []string{"unchanged"}},
		{name: "unknown key", args: []string{"config", "set", "unknown=1"}, code: 2, stderr: []string{`"unknown"`, "valid keys", "gpu_aware", "tie_epsilon"}},
		{name: "not a bool", args: []string{"config", "set", "gpu_aware=perhaps"}, code: 2, stderr: []string{"gpu_aware", "bool"}},
		{name: "out of range", args: []string{"config", "set", "tie_epsilon=5"}, code: 1, stderr: []string{"400", "tie_epsilon"}},
		{name: "rule broken", args: []string{"config", "set", "max_temperature_c=30"}, code: 1, stderr: []string{"422", "\n  - ", "max_temperature_c"}},
		{name: "one key", args: []string{"config", "get", "tie_epsilon"}, stdout: []string{"tie_epsilon", "0.02"}, check: func(t *testing.T, out string) {
			if strings.Contains(out, "gpu_aware") {
				t.Fatalf("config get tie_epsilon printed other keys:\n%s", out)
			}
		}},
		{name: "unknown key to get", args: []string{"config", "get", "gpu_awareness"}, code: 2, stderr: []string{`"gpu_awareness"`, "valid keys"}},
		{name: "key given twice", args: []string{"config", "set", "gpu_aware=false", "gpu_aware=true"}, code: 2, stderr: []string{"more than once"}},
		{name: "not a finite number", args: []string{"config", "set", "max_temperature_c=NaN"}, code: 2, stderr: []string{"max_temperature_c", "not a finite number"}},
		{name: "a large integer out of range", args: []string{"config", "set", "alternatives=1000000"}, code: 1, stderr: []string{"got 1000000, want at most 10"}},
		{name: "roll forward", args: []string{"config", "set", "gpu_aware=true"}, stdout: []string{"gpu_aware: false -> true"}, stderr: []string{"live on 1 selector(s)"}},
	}
	ts.runCases(t, tests)
	if mode := ts.selectJSON(t, "--category", "code").Mode; mode != selection.ModeGPUAware {
		t.Fatalf("mode %s right after rolling forward", mode)
	}
}

func TestReport(t *testing.T) {
	ts := startSystem(t)
	for _, c := range []string{"code", "code", "math", "math", "math"} {
		ts.selectJSON(t, "--category", c)
	}
	mustContain(t, "report", ts.ok(t, "report"), "models-per-category", "multi-category-effectiveness", "performance-by-category")
	// The sink stores the events a moment after the replies.
	eventually(t, "the sink stored every decision", func() error {
		var res struct {
			Columns []string `json:"columns"`
			Rows    [][]any  `json:"rows"`
		}
		if err := json.Unmarshal([]byte(ts.ok(t, "report", "models-per-category", "--json")), &res); err != nil {
			t.Fatal(err)
		}
		i := slices.Index(res.Columns, "usage_count")
		if i < 0 {
			t.Fatalf("no usage_count column: %v", res.Columns)
		}
		total := 0.0
		for _, row := range res.Rows {
			total += row[i].(float64)
		}
		if total != 5 {
			return fmt.Errorf("rows %v count %v selections, want 5", res.Rows, total)
		}
		return nil
	})
	mustContain(t, "performance-by-category", ts.ok(t, "report", "performance-by-category"),
		"task_category", "avg_duration", "avg_score", "code", "math", "2 row(s)")
	r := ts.run(t, "report", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, "404") || !strings.Contains(r.stderr, "models-per-category") {
		t.Fatalf("unknown report: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestVersionAndProvision(t *testing.T) {
	ts := startSystem(t)
	mustContain(t, "version", ts.ok(t, "version"), "orchestrator "+Version)
	mustContain(t, "provision", ts.ok(t, "provision"), "ORCH_SELECTIONS", "orch_models")
	if r := ts.run(t, "provision", "--replicas", "3"); r.code != 1 {
		t.Fatalf("R3 on one server: exit %d, want 1 (%s)", r.code, r.stderr)
	}
	for _, age := range []string{"-1h", "0s"} {
		if r := ts.run(t, "provision", "--selection-max-age", age); r.code != 2 || !strings.Contains(r.stderr, "must be positive") {
			t.Fatalf("--selection-max-age %s: exit %d, want 2 (%s)", age, r.code, r.stderr)
		}
	}
}

package obs_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nlocalmodels/orchestrator/pkg/obs"
)

// The Prometheus rules and the Grafana dashboard of deploy/ name metrics by
// hand; these tests keep them to the metrics the code exports, and the
// rules to their conventions. promtool checks the PromQL itself
// (scripts/test-alerts).
const (
	repoRoot       = "../.."
	alertsFile     = repoRoot + "/deploy/prometheus/alerts.yml"
	alertTestsFile = repoRoot + "/deploy/prometheus/alerts_test.yml"
	dashboardFile  = repoRoot + "/deploy/grafana/orchestrator-dashboard.json"
	// dsVariable is the dashboard's data source variable.
	dsVariable = "DS_PROMETHEUS"
)

// Source patterns of metric names: a name is Namespace, then a subsystem
// (Subsystem: "x" in the options, or BuildFQName's second argument) or
// none, then a string literal of the same file; or Namespace+"_name"; or
// a whole "orch_..." literal.
var (
	subsystemRE = regexp.MustCompile(`(?:Subsystem:\s*|BuildFQName\(\s*(?:obs\.)?Namespace\s*,\s*)"([a-z0-9_]+)"`)
	literalRE   = regexp.MustCompile(`"([a-z][a-z0-9_]*)"`)
	concatRE    = regexp.MustCompile(`Namespace\s*\+\s*"(_[a-z0-9_]+)"`)
	// tokenRE finds identifiers in PromQL once strings are removed:
	// metric names, recording rule names (with ':'), labels, functions.
	tokenRE  = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	stringRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
)

// exportedMetrics lists the metric names the Go code of the services and
// of pkg can export. It over-approximates (any literal of a file that sets
// a subsystem combines with it), but a name no source spells cannot pass.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	prefix := obs.Namespace + "_"
	directRE := regexp.MustCompile(`"(` + regexp.QuoteMeta(prefix) + `[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{repoRoot + "/services", repoRoot + "/pkg"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src := string(b)
			for _, m := range directRE.FindAllStringSubmatch(src, -1) {
				names[m[1]] = true
			}
			if !strings.Contains(src, "Namespace") {
				return nil
			}
			for _, m := range concatRE.FindAllStringSubmatch(src, -1) {
				names[obs.Namespace+m[1]] = true
			}
			subsystems := []string{""}
			for _, m := range subsystemRE.FindAllStringSubmatch(src, -1) {
				subsystems = append(subsystems, m[1]+"_")
			}
			for _, lit := range literalRE.FindAllStringSubmatch(src, -1) {
				for _, sub := range subsystems {
					names[prefix+sub+lit[1]] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("reading the Go sources: %v", err)
		}
	}
	return names
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	readYAML(t, alertsFile, &rf)
	if len(rf.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
	return rf
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int         `json:"id"`
		Type       string      `json:"type"`
		Title      string      `json:"title"`
		Datasource *datasource `json:"datasource"`
		Targets    []struct {
			Expr       string      `json:"expr"`
			Datasource *datasource `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

type variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Definition string `json:"definition"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d
}

// ruleQueries and dashboardQueries are the PromQL expressions of a deploy
// file, by where they are.
func ruleQueries(rf ruleFile) map[string]string {
	out := map[string]string{}
	for _, g := range rf.Groups {
		for i, r := range g.Rules {
			out[fmt.Sprintf("group %s rule %d (%s)", g.Name, i+1, r.Alert+r.Record)] = r.Expr
		}
	}
	return out
}

func dashboardQueries(d dashboard) map[string]string {
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("panel %q query %d", p.Title, i+1)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out["variable "+v.Name] = v.Definition
		}
	}
	return out
}

// metricsIn returns the metric names (prefix obs.Namespace+"_") and the
// recording rule names (with ':') an expression uses.
func metricsIn(expr string) (metrics, recorded []string) {
	for _, tok := range tokenRE.FindAllString(stringRE.ReplaceAllString(expr, `""`), -1) {
		switch {
		case strings.Contains(tok, ":"):
			recorded = append(recorded, tok)
		case strings.HasPrefix(tok, obs.Namespace+"_"):
			metrics = append(metrics, tok)
		}
	}
	return metrics, recorded
}

// exported reports whether name, or the series name of a histogram or
// summary it is part of, is exported.
func exported(names map[string]bool, name string) bool {
	if names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
			return true
		}
	}
	return false
}

func TestDeployUsesExportedMetrics(t *testing.T) {
	names := exportedMetrics(t)
	rf := readRules(t)
	records := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	// The extraction must see what the services are known to export, or
	// the checks below would pass on an empty list.
	for _, known := range []string{"orch_selector_decisions_total", "orch_gpu_sample_age_seconds", "orch_gpu_temperature_celsius", "orch_registry_writes_total"} {
		if !names[known] {
			t.Fatalf("the source scan misses %s: fix exportedMetrics", known)
		}
	}
	files := []struct {
		name    string
		queries map[string]string
	}{
		{alertsFile, ruleQueries(rf)},
		{dashboardFile, dashboardQueries(readDashboard(t))},
	}
	for _, f := range files {
		t.Run(filepath.Base(f.name), func(t *testing.T) {
			used := 0
			for _, where := range slices.Sorted(maps.Keys(f.queries)) {
				metrics, recorded := metricsIn(f.queries[where])
				used += len(metrics)
				for _, m := range metrics {
					if !exported(names, m) {
						t.Errorf("%s: %s uses %s, which no service exports", f.name, where, m)
					}
				}
				for _, r := range recorded {
					if !records[r] {
						t.Errorf("%s: %s uses %s, which %s does not record", f.name, where, r, alertsFile)
					}
				}
			}
			if used < 10 {
				t.Errorf("%s: only %d metric uses found: is the file read right?", f.name, used)
			}
		})
	}
}

func TestMetricsIn(t *testing.T) {
	tests := []struct {
		expr              string
		metrics, recorded []string
	}{
		{`sum(rate(orch_a_total{outcome=~"orch_not_a_metric|x"}[5m])) / orch_b`, []string{"orch_a_total", "orch_b"}, nil},
		{`histogram_quantile(0.5, sum by (le) (rate(orch_d_seconds_bucket[$__rate_interval])))`, []string{"orch_d_seconds_bucket"}, nil},
		{`model_category:orch_selections:rate5m{category="code"} > 0`, nil, []string{"model_category:orch_selections:rate5m"}},
		{`up{job="gpu-telemetry"} == 0`, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			m, r := metricsIn(tt.expr)
			if !slices.Equal(m, tt.metrics) || !slices.Equal(r, tt.recorded) {
				t.Fatalf("metrics %q recorded %q, want %q and %q", m, r, tt.metrics, tt.recorded)
			}
		})
	}
}

func TestExportedHistogramParts(t *testing.T) {
	names := map[string]bool{"orch_x_seconds": true}
	tests := []struct {
		name string
		want bool
	}{
		{"orch_x_seconds", true},
		{"orch_x_seconds_bucket", true},
		{"orch_x_seconds_count", true},
		{"orch_x_seconds_total", false},
		{"orch_y_seconds_bucket", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exported(names, tt.name); got != tt.want {
				t.Fatalf("exported(%s) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestAlertRules(t *testing.T) {
	rf := readRules(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				if !strings.Contains(r.Record, ":") {
					t.Errorf("recording rule %q: name it level:metric:operations", r.Record)
				}
				continue
			}
			if g.Name != "orchestrator" {
				t.Errorf("alert %s is in group %q, want orchestrator", r.Alert, g.Name)
			}
			alerts = append(alerts, r.Alert)
			t.Run(r.Alert+"/"+r.Labels["severity"], func(t *testing.T) {
				if s := r.Labels["severity"]; s != "warning" && s != "critical" {
					t.Errorf("severity %q, want warning or critical", s)
				}
				for _, a := range []string{"summary", "description", "runbook"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("no %s annotation", a)
					}
				}
			})
		}
	}

	// Every alert has a promtool case where it fires and one where it does not.
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, alertTestsFile, &tests)
	if !slices.Contains(tests.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s does not load %s", alertTestsFile, filepath.Base(alertsFile))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: alert %s needs a case where it fires (%v) and one where it does not (%v)", alertTestsFile, a, fires[a], quiet[a])
		}
	}
}

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.SchemaVersion < 36 || d.UID == "" {
		t.Errorf("schemaVersion %d and uid %q: want 36 or later and a fixed uid", d.SchemaVersion, d.UID)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool { return v.Name == dsVariable && v.Type == "datasource" }) {
		t.Errorf("no data source variable %s", dsVariable)
	}
	wantDS := "${" + dsVariable + "}"
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != wantDS || len(p.Targets) == 0 {
			t.Errorf("panel %q: want data source %s and at least one query", p.Title, wantDS)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != wantDS || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: a query without data source %s or expression", p.Title, wantDS)
			}
		}
	}
	// The seed's dashboard metrics: GPU utilisation per device, model
	// selection frequency, selection latency, temperature, memory.
	used := map[string]bool{}
	for _, q := range dashboardQueries(d) {
		m, _ := metricsIn(q)
		for _, name := range m {
			used[name] = true
		}
	}
	for _, want := range []string{
		"orch_gpu_utilization_ratio", "orch_selector_decisions_total", "orch_selector_decision_duration_seconds_bucket",
		"orch_selector_decision_duration_seconds_sum", "orch_gpu_temperature_celsius", "orch_gpu_memory_used_bytes",
		"orch_gpu_sample_age_seconds", "orch_selector_events_dropped_total", "orch_sink_consumer_lag", "orch_sink_rows_inserted_total",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
}

package registry

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func TestConfigEndpoints(t *testing.T) {
	h := start(t)
	var cfg selection.Config
	h.ok("config.get", nil, &cfg)
	if cfg != selection.DefaultConfig() {
		t.Fatalf("seeded config %+v, want the defaults", cfg)
	}

	next := selection.DefaultConfig()
	next.Alternatives = 5
	var put ConfigPutReply
	h.ok("config.put", next, &put)
	if put.Revision == 0 {
		t.Fatal("no revision")
	}
	h.ok("config.get", nil, &cfg)
	if cfg != next {
		t.Fatalf("get after put: %+v", cfg)
	}

	var patched selection.Config
	h.ok("config.patch", `{"gpu_aware": false}`, &patched)
	want := next
	want.GPUAware = false
	if patched != want {
		t.Fatalf("patch gpu_aware: %+v, want only gpu_aware changed", patched)
	}
	h.ok("config.patch", `{"confidence": {"primary": 0.95}}`, &patched)
	want.Confidence.Primary = 0.95
	if patched != want {
		t.Fatalf("patch confidence.primary: %+v, want only it changed", patched)
	}
	h.ok("config.get", nil, &cfg)
	if cfg != want {
		t.Fatalf("stored after patches: %+v", cfg)
	}

	bad := selection.DefaultConfig()
	bad.MaxTemperatureC = 30 // below ideal
	tests := []struct {
		name, endpoint string
		body           any
		wantCode       string
		wantProblems   [][]string
	}{
		{"patch out of range", "config.patch", `{"confidence":{"primary":2}}`, bus.CodeBadRequest,
			[][]string{{"/confidence/primary"}}},
		{"patch two violations", "config.patch", `{"confidence":{"primary":2},"alternatives":-1}`, bus.CodeBadRequest,
			[][]string{{"/confidence/primary"}, {"/alternatives"}}},
		{"patch unknown field", "config.patch", `{"gpu_awareness":false}`, bus.CodeBadRequest, [][]string{{"gpu_awareness"}}},
		{"patch wrong type", "config.patch", `{"gpu_aware":"no"}`, bus.CodeBadRequest, [][]string{{"/gpu_aware"}}},
		{"patch not an object", "config.patch", `[{"gpu_aware":false}]`, bus.CodeBadRequest, nil},
		{"patch breaking a cross-field rule", "config.patch", `{"ideal_temperature_c": 90}`, bus.CodeUnprocessable,
			[][]string{{"max_temperature_c"}}},
		{"put cross-field rule", "config.put", bad, bus.CodeUnprocessable, [][]string{{"max_temperature_c"}}},
		{"put incomplete", "config.put", `{"gpu_aware":true}`, bus.CodeBadRequest, [][]string{{"default_mode"}, {"confidence"}}},
		{"put not JSON", "config.put", `{`, bus.CodeBadRequest, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.refused(t, tc.endpoint, tc.body, tc.wantCode, tc.wantProblems...)
			var now selection.Config
			h.ok("config.get", nil, &now)
			if now != want {
				t.Fatalf("config changed: %+v", now)
			}
		})
	}

	t.Run("stored value is the plain config JSON", func(t *testing.T) {
		e, err := h.svc.st.config.Get(t.Context(), bus.SelectionConfigKey)
		if err != nil {
			t.Fatal(err)
		}
		var stored selection.Config
		if err := json.Unmarshal(e.Value(), &stored); err != nil || stored != want {
			t.Fatalf("stored %s: %v", e.Value(), err)
		}
	})
}

func TestMergePatch(t *testing.T) {
	tests := []struct {
		name             string
		dst, patch, want map[string]any
	}{
		{"replace a leaf", map[string]any{"a": 1.0, "b": 2.0}, map[string]any{"a": 3.0}, map[string]any{"a": 3.0, "b": 2.0}},
		{"merge nested objects", map[string]any{"c": map[string]any{"x": 1.0, "y": 2.0}}, map[string]any{"c": map[string]any{"y": 5.0}},
			map[string]any{"c": map[string]any{"x": 1.0, "y": 5.0}}},
		{"object replaces a leaf", map[string]any{"c": 1.0}, map[string]any{"c": map[string]any{"y": 5.0}},
			map[string]any{"c": map[string]any{"y": 5.0}}},
		{"leaf replaces an object", map[string]any{"c": map[string]any{"x": 1.0}}, map[string]any{"c": false},
			map[string]any{"c": false}},
		{"new key", map[string]any{}, map[string]any{"n": "v"}, map[string]any{"n": "v"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mergePatch(tc.dst, tc.patch)
			if !reflect.DeepEqual(tc.dst, tc.want) {
				t.Fatalf("got %v, want %v", tc.dst, tc.want)
			}
		})
	}
}

package cfgpatch

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    map[string]any
		wantErr error
		// mention must appear in the error.
		mention []string
	}{
		{name: "rollback switch", args: []string{"gpu_aware=false"}, want: map[string]any{"gpu_aware": false}},
		{
			name: "nested and top level", args: []string{"confidence.primary=0.95", "tie_epsilon=0.02"},
			want: map[string]any{"confidence": map[string]any{"primary": 0.95}, "tie_epsilon": 0.02},
		},
		{
			name: "two nested keys share their object", args: []string{"placement.headroom=1", "placement.temperature=0"},
			want: map[string]any{"placement": map[string]any{"headroom": 1.0, "temperature": 0.0}},
		},
		{name: "integer", args: []string{"alternatives=5"}, want: map[string]any{"alternatives": int64(5)}},
		{name: "string", args: []string{"default_mode=multi_category"}, want: map[string]any{"default_mode": "multi_category"}},
		{name: "spaces around", args: []string{" gpu_aware = true "}, want: map[string]any{"gpu_aware": true}},
		{name: "a key given twice is refused", args: []string{"gpu_aware=false", "gpu_aware=true"}, wantErr: ErrRepeatedKey, mention: []string{"gpu_aware", "more than once"}},
		{name: "NaN is refused", args: []string{"max_temperature_c=NaN"}, wantErr: ErrBadValue, mention: []string{"max_temperature_c", "finite"}},
		{name: "infinity is refused", args: []string{"tie_epsilon=-Inf"}, wantErr: ErrBadValue, mention: []string{"tie_epsilon", "finite"}},
		{name: "unknown key lists the valid ones", args: []string{"unknown=1"}, wantErr: ErrUnknownKey, mention: []string{`"unknown"`, "valid keys", "gpu_aware", "confidence.primary"}},
		{name: "an object is not a key", args: []string{"confidence=1"}, wantErr: ErrUnknownKey},
		{name: "not a bool", args: []string{"gpu_aware=maybe"}, wantErr: ErrBadValue, mention: []string{"gpu_aware", "bool"}},
		{name: "float for an int", args: []string{"alternatives=2.5"}, wantErr: ErrBadValue, mention: []string{"int"}},
		{name: "no equals sign", args: []string{"gpu_aware"}, wantErr: ErrSyntax},
		{name: "every problem reported", args: []string{"x=1", "gpu_aware=2"}, wantErr: ErrUnknownKey, mention: []string{`"x"`, "gpu_aware=\"2\""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.args)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for _, m := range tc.mention {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error does not mention %q: %v", m, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("patch = %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestKeysCoverConfig checks that every key set through a patch lands in
// its field: the keys and selection.Config cannot drift apart.
func TestKeysCoverConfig(t *testing.T) {
	if n := len(Keys()); n != 16 {
		t.Errorf("%d keys, want 16: %v", n, KeyNames())
	}
	values := map[string]string{"bool": "false", "int": "7", "float": "0.125", "string": "benchmark"}
	for _, k := range Keys() {
		t.Run(k.Name, func(t *testing.T) {
			patch, err := Parse([]string{k.Name + "=" + values[k.Kind]})
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(patch)
			if err != nil {
				t.Fatal(err)
			}
			cfg := selection.DefaultConfig()
			if err := json.Unmarshal(data, &cfg); err != nil {
				t.Fatal(err)
			}
			for _, kv := range Flatten(cfg) {
				if kv[0] == k.Name && kv[1] != values[k.Kind] {
					t.Fatalf("%s = %s after the patch, want %s", k.Name, kv[1], values[k.Kind])
				}
			}
		})
	}
}

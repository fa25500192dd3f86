package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		name      string
		level     string
		wantWarn  bool
		wantLines int
	}{
		{"default level hides debug", "", false, 1},
		{"debug shows debug", "debug", false, 2},
		{"error hides info", "ERROR", false, 0},
		{"unknown level warns and uses info", "loud", true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newLogger(&buf, false, "svc", tt.level)
			l.Debug().Msg("debug line")
			l.Info().Msg("info line")
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if buf.Len() == 0 {
				lines = nil
			}
			if len(lines) != tt.wantLines {
				t.Fatalf("got %d lines, want %d: %q", len(lines), tt.wantLines, lines)
			}
			for _, line := range lines {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil || m["service"] != "svc" {
					t.Errorf("line %q is not JSON with service=svc", line)
				}
			}
			if tt.wantWarn && !strings.Contains(buf.String(), "unknown log level") {
				t.Error("no warning about the unknown level")
			}
		})
	}
}

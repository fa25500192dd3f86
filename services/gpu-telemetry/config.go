package gputelemetry

import (
	"fmt"
	"strings"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// Config is the agent's configuration, read with envconfig prefix TELEMETRY
// (e.g. TELEMETRY_INTERVAL); the NATS settings keep their own names (NATS_URL...).
type Config struct {
	bus.ConnConfig

	// Host names this machine in subjects and samples; default os.Hostname().
	// Characters a subject token cannot hold are replaced by '-'.
	Host string
	// Interval between samples; ticks are scheduled from the start time, so
	// the cadence does not drift.
	Interval time.Duration `default:"5s"`
	// Source is "auto" (NVML; simulate only if Simulate), "nvml" or "simulated".
	Source string `default:"auto"`
	// Simulate lets "auto" fall back to simulated GPUs when NVML is unavailable.
	Simulate bool
	// ReadTimeout bounds one GPU's read; a slower GPU is published as
	// unhealthy with FailedReads ["timeout"]. Must be below Interval.
	ReadTimeout time.Duration `split_words:"true" default:"1s"`

	// MetricsAddr serves /metrics, /healthz and /readyz (cmd/gpu-telemetry only).
	MetricsAddr string `split_words:"true" default:":9104"`

	// SimGpus lists simulated GPUs as "N x TYPE" specs, e.g. "2xH100-SXM5-80GB,1xL40S".
	SimGpus []string `split_words:"true" default:"2xA100-SXM4-80GB"`
	// SimSeed seeds the simulation; 0 derives it from Host, so each host
	// differs but repeats itself across restarts.
	SimSeed uint64 `split_words:"true"`
	// SimFailRate is the chance (0..1) that a simulated read fails.
	SimFailRate float64 `split_words:"true"`
	// SimXidRate is the chance (0..1) per sample of a simulated critical Xid.
	SimXidRate float64 `split_words:"true"`
}

// Validate returns an error wrapping ErrConfig that names every setting
// that cannot work. New calls it; the binary calls it first, so that a bad
// TELEMETRY_* variable is reported before anything connects.
func (c *Config) Validate() error {
	var problems []string
	if c.Interval <= 0 {
		problems = append(problems, fmt.Sprintf("TELEMETRY_INTERVAL %s must be positive", c.Interval))
	}
	if c.ReadTimeout <= 0 || c.ReadTimeout >= c.Interval {
		problems = append(problems, fmt.Sprintf("TELEMETRY_READ_TIMEOUT %s must be positive and below TELEMETRY_INTERVAL %s", c.ReadTimeout, c.Interval))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"TELEMETRY_SIM_FAIL_RATE", c.SimFailRate}, {"TELEMETRY_SIM_XID_RATE", c.SimXidRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			problems = append(problems, fmt.Sprintf("%s %v must be within 0..1", r.name, r.v))
		}
	}
	switch c.Source {
	case SourceAuto, SourceNVML, SourceSimulated:
	default:
		problems = append(problems, fmt.Sprintf("TELEMETRY_SOURCE %q must be auto, nvml or simulated", c.Source))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// SanitizeHost makes host usable as one subject token: anything but ASCII
// letters, digits, '-' and '_' (dots, wildcards, spaces...) becomes '-'.
func SanitizeHost(host string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, strings.TrimSpace(host))
}

package cli

import (
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/client"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

func (a *app) selectCmd() *cobra.Command {
	var (
		req  selection.Request
		mode string
	)
	c := &req.Constraints
	cmd := &cobra.Command{
		Use:   "select --category CATEGORY [constraints]",
		Short: "Ask the selector which model and GPU should run a task",
		Long: `select sends a selection request to orch.select and prints the decision:
model, GPU, final score, each scorer's value, the reason, the alternatives,
the telemetry age and the selection duration. --json prints the reply as sent.`,
		Example: `  orchestrator select --category code
  orchestrator select --category math --mode multi_category --max-memory-mb 16384
  orchestrator select --category code --deny qwen2.5-coder-32b-instruct-q4_k_m --max-util 80 --json`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.TaskCategory == "" {
				return usage(cmd, "--category is required")
			}
			req.Mode = selection.Mode(mode)
			if mode != "" && !req.Mode.Valid() {
				return usage(cmd, "--mode %q is not benchmark, multi_category or gpu_aware", mode)
			}
			for flag, v := range map[string]float64{"--min-score": c.MinScore, "--max-temp": c.MaxTemperatureC, "--max-util": c.MaxUtilizationPct} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return usage(cmd, "%s %v must be a finite number", flag, v)
				}
			}
			return a.withConn(cmd.Context(), "select", func(nc *nats.Conn) error {
				start := time.Now()
				rep, err := client.New(nc, client.WithTimeout(a.timeout)).Select(cmd.Context(), req)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(rep)
				}
				return a.printReply(rep, time.Since(start))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.TaskCategory, "category", "", "task category, e.g. code, math, reasoning (required)")
	f.StringVar(&mode, "mode", "", "benchmark, multi_category or gpu_aware (default: the configured default_mode)")
	f.Int64Var(&c.MaxGPUMemoryMB, "max-memory-mb", 0, "largest gpu_memory_mb a model may need")
	f.StringSliceVar(&c.AllowModels, "allow", nil, "only these model ids (repeat or comma-separate)")
	f.StringSliceVar(&c.DenyModels, "deny", nil, "never these model ids")
	f.IntVar(&c.MinContextLength, "min-context", 0, "smallest context length")
	f.Float64Var(&c.MinScore, "min-score", 0, "lowest category quality score, 0..1")
	f.StringSliceVar(&c.Hosts, "host", nil, "only GPUs of these hosts (gpu_aware)")
	f.StringSliceVar(&c.Quantizations, "quantization", nil, "only these quantizations, e.g. q4_k_m,awq-int4")
	f.Float64Var(&c.MaxTemperatureC, "max-temp", 0, "only GPUs cooler than this, °C (gpu_aware)")
	f.Float64Var(&c.MaxUtilizationPct, "max-util", 0, "only GPUs at most this busy, % (gpu_aware)")
	f.StringVar(&req.RequestID, "request-id", "", "your id for the request, echoed in the reply and the event")
	return cmd
}

func (a *app) printReply(rep *selection.Reply, roundTrip time.Duration) error {
	t := newTable(a.stdout)
	t.row("model:", fmt.Sprintf("%s (%s, %s, %d MB)", rep.ModelID, rep.ModelName, rep.Quantization, rep.GPUMemoryMB))
	gpu := "none (no GPU placement in this mode)"
	if rep.GPU != nil {
		gpu = fmt.Sprintf("%s/%d %s (%s)", rep.GPU.Host, rep.GPU.Index, rep.GPU.Name, rep.GPU.UUID)
	}
	t.row("gpu:", gpu)
	mode := string(rep.Mode)
	if rep.RequestedMode != rep.Mode {
		mode += fmt.Sprintf(" (requested %s)", rep.RequestedMode)
	}
	if rep.Degraded {
		mode += " DEGRADED: no fresh GPU telemetry"
	}
	t.row("mode:", mode)
	t.row("final score:", fmt.Sprintf("%.4f", rep.FinalScore))
	s := rep.Scores
	t.row("scores:", fmt.Sprintf("quality %.4f  confidence %.2f  placement %.4f (utilization %.3f, headroom %.3f, temperature %.3f)",
		s.Quality, s.Confidence, s.Placement, s.Utilization, s.Headroom, s.Temperature))
	t.row("primary category:", rep.PrimaryCategory)
	t.row("reason:", rep.Reason)
	age := "no telemetry"
	if rep.TelemetryAgeMs >= 0 {
		age = fmtAge(time.Duration(rep.TelemetryAgeMs * float64(time.Millisecond)))
	}
	t.row("telemetry age:", age)
	t.row("duration:", fmt.Sprintf("%.1fµs selector, %s round trip, %d candidate(s)", rep.SelectionDurationUs, fmtAge(roundTrip), rep.Candidates))
	t.row("event:", rep.EventID)
	if rep.RequestID != "" {
		t.row("request:", rep.RequestID)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(rep.Alternatives) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout, "\nalternatives:")
	at := newTable(a.stdout, "  MODEL", "GPU", "FINAL", "QUALITY", "CONFIDENCE", "PLACEMENT")
	for _, alt := range rep.Alternatives {
		g := "-"
		if alt.GPU != nil {
			g = fmt.Sprintf("%s/%d", alt.GPU.Host, alt.GPU.Index)
		}
		at.row("  "+alt.ModelID, g, fmt.Sprintf("%.4f", alt.FinalScore), fmt.Sprintf("%.4f", alt.Scores.Quality),
			fmt.Sprintf("%.2f", alt.Scores.Confidence), fmt.Sprintf("%.4f", alt.Scores.Placement))
	}
	return at.flush()
}

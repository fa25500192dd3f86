package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

func (a *app) gpusCmd() *cobra.Command {
	var once bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "gpus [--once]",
		Short: "Show every GPU from the telemetry stream, refreshed live",
		Long: `gpus reads the last sample of every GPU from the telemetry stream, then the
live ones, and redraws the table every --interval until Ctrl-C (--once prints
it once). Rows older than the config's stale_after are marked STALE (the
selector will not place on them), unhealthy GPUs UNHEALTHY with the reason.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if every <= 0 {
				return usage(cmd, "--interval %s must be positive", every)
			}
			ctx := cmd.Context()
			return a.withJetStream(ctx, "gpus", func(nc *nats.Conn, js jetstream.JetStream) error {
				staleAfter := a.staleAfter(ctx, nc)
				cache := telemetry.NewCache()
				caughtUp, stop, err := followTelemetry(ctx, js, cache)
				if err != nil {
					return err
				}
				defer stop()
				select {
				case <-caughtUp:
				case <-ctx.Done():
					return nil
				case <-time.After(a.timeout):
					fmt.Fprintf(a.stderr, "telemetry stream still catching up after %s; showing what arrived\n", a.timeout)
				}
				if once {
					return a.printGPUs(cache, staleAfter, time.Now())
				}
				tick := time.NewTicker(every)
				defer tick.Stop()
				terminal := isTerminal(a.stdout)
				for {
					// With --json, stdout carries one JSON array per refresh
					// and nothing else.
					if terminal && !a.json {
						fmt.Fprint(a.stdout, "\033[H\033[2J")
					}
					if !a.json {
						fmt.Fprintf(a.stdout, "%s  GPUs on %s (every %s, stale after %s; Ctrl-C to stop)\n",
							time.Now().Format("15:04:05"), bus.TelemetryStream, every, staleAfter)
						if err := bus.Connected(nc); err != nil { // the rows stop changing: say why
							fmt.Fprintf(a.stdout, "NATS: %v; the rows are the samples received before\n", err)
						}
					}
					if err := a.printGPUs(cache, staleAfter, time.Now()); err != nil {
						return err
					}
					if !terminal && !a.json {
						fmt.Fprintln(a.stdout)
					}
					select {
					case <-ctx.Done():
						return nil
					case <-tick.C:
					}
				}
			})
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "print the table once and exit")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "refresh interval")
	return cmd
}

// staleAfter is the selection config's stale_after, or the default when the
// registry cannot say (with a note: the marks may then differ from the selector's).
func (a *app) staleAfter(ctx context.Context, nc *nats.Conn) time.Duration {
	var cfg selection.Config
	if err := a.request(ctx, nc, registrySubject("config.get"), nil, &cfg); err != nil {
		def := selection.DefaultConfig().StaleAfter()
		fmt.Fprintf(a.stderr, "note: cannot read the selection config (%v); marking samples older than the default %s stale\n", err, def)
		return def
	}
	return cfg.StaleAfter()
}

// followTelemetry fills cache with the last sample per GPU and then the live
// ones. caughtUp is closed once the stored samples are in.
func followTelemetry(ctx context.Context, js jetstream.JetStream, cache *telemetry.Cache) (caughtUp <-chan struct{}, stop func(), err error) {
	done := make(chan struct{})
	var once sync.Once
	markDone := func() { once.Do(func() { close(done) }) }
	stream, err := js.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry stream %s: %w", bus.TelemetryStream, err)
	}
	if stream.CachedInfo().State.Msgs == 0 {
		markDone()
	}
	cons, err := js.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.TelemetryWildcard},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry consumer: %w", err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var s telemetry.Sample
		if json.Unmarshal(msg.Data(), &s) == nil {
			cache.Put(s)
		}
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			markDone()
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry consumer: %w", err)
	}
	return done, cc.Stop, nil
}

// gpuRow is one GPU in --json output.
type gpuRow struct {
	telemetry.Sample
	AgeMs float64 `json:"age_ms"`
	Stale bool    `json:"stale"`
}

func (a *app) printGPUs(cache *telemetry.Cache, staleAfter time.Duration, now time.Time) error {
	samples, _ := cache.Samples()
	if a.json {
		rows := make([]gpuRow, len(samples))
		for i, s := range samples {
			rows[i] = gpuRow{Sample: s, AgeMs: float64(s.Age(now)) / float64(time.Millisecond), Stale: s.Stale(now, staleAfter)}
		}
		return a.printJSON(rows)
	}
	return writeGPUTable(a.stdout, samples, staleAfter, now)
}

func writeGPUTable(w io.Writer, samples []telemetry.Sample, staleAfter time.Duration, now time.Time) error {
	if len(samples) == 0 {
		_, err := fmt.Fprintf(w, "no GPU samples on %s (is gpu-telemetry running?)\n", bus.TelemetryStream)
		return err
	}
	t := newTable(w, "GPU", "NAME", "UTIL", "MEMORY USED/TOTAL", "TEMP", "POWER", "HEALTHY", "AGE", "STATUS", "SOURCE")
	stale, unhealthy := 0, 0
	for _, s := range samples {
		status := "ok"
		healthy := "yes"
		if !s.Healthy {
			unhealthy++
			healthy = "NO"
			status = "UNHEALTHY"
			if s.HealthReason != "" {
				status += ": " + s.HealthReason
			}
		}
		if s.Stale(now, staleAfter) {
			stale++
			if status == "ok" {
				status = "STALE"
			} else {
				status = "STALE, " + status
			}
		}
		power := fmt.Sprintf("%.0f/%.0f W", s.PowerW, s.PowerLimitW)
		t.row(s.Key(), s.Name, fmt.Sprintf("%.0f%%", s.UtilizationGPUPct),
			fmt.Sprintf("%d/%d MiB", s.MemoryUsedMB, s.MemoryTotalMB), fmt.Sprintf("%.0f°C", s.TemperatureC),
			power, healthy, fmtAge(s.Age(now)), status, s.Source)
	}
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d GPU(s), %d stale, %d unhealthy\n", len(samples), stale, unhealthy)
	return err
}

// Command gpu-telemetry publishes this host's GPU samples to NATS every
// TELEMETRY_INTERVAL. Configuration is from the environment (TELEMETRY_*, NATS_*).
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/logging"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
)

// drainTimeout bounds the flush of the last samples on shutdown.
const drainTimeout = 5 * time.Second

func main() {
	log := logging.New("gpu-telemetry")
	if err := run(log); err != nil {
		log.Error().Err(err).Msg("gpu-telemetry stopped")
		os.Exit(1)
	}
}

func run(log zerolog.Logger) error {
	var cfg gputelemetry.Config
	if err := envconfig.Process("TELEMETRY", &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Logger = &log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := bus.Connect(ctx, cfg.ConnConfig, "gpu-telemetry")
	if err != nil {
		return err
	}
	httpd := obs.NewServer(cfg.MetricsAddr, obs.NewRegistry())
	svc, err := gputelemetry.New(cfg, nc, gputelemetry.WithLogger(log), gputelemetry.WithMetrics(httpd.Registry()))
	if err == nil { // a taken metrics port fails the start, not only /healthz
		if err = httpd.Listen(); err != nil {
			_ = svc.Close() // NVML is shut down on every way out
		}
	}
	if err != nil {
		nc.Close()
		return err
	}
	httpd.AddCheck("gpu-telemetry", svc.Check)
	go func() {
		if err := httpd.Run(ctx); err != nil {
			log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	return errors.Join(svc.Run(ctx), bus.Drain(nc, drainTimeout))
}

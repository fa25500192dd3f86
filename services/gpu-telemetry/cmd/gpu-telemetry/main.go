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
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
)

// drainTimeout bounds the flush of the last samples on shutdown.
const drainTimeout = 5 * time.Second

func main() {
	logger := newLogger()
	if err := run(logger); err != nil {
		logger.Error().Err(err).Msg("gpu-telemetry stopped")
		os.Exit(1)
	}
}

func run(logger zerolog.Logger) error {
	var cfg gputelemetry.Config
	if err := envconfig.Process("TELEMETRY", &cfg); err != nil {
		return err
	}
	cfg.Logger = &logger

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := bus.Connect(ctx, cfg.ConnConfig, "gpu-telemetry")
	if err != nil {
		return err
	}
	svc, err := gputelemetry.New(cfg, nc, gputelemetry.WithLogger(logger))
	if err != nil {
		nc.Close()
		return err
	}
	runErr := svc.Run(ctx)
	return errors.Join(runErr, bus.Drain(nc, drainTimeout))
}

// newLogger logs JSON, or human-readable lines when stderr is a terminal.
func newLogger() zerolog.Logger {
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).With().Timestamp().Str("service", "gpu-telemetry").Logger()
}

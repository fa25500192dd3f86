// Command metrics-sink stores every selection event of ORCH_SELECTIONS in
// SQL (SQLite file by default, PostgreSQL with a postgres:// URL), serves
// the reports on orch.sink.>, and on SINK_METRICS_ADDR (default :9103) the
// dashboard (/ and /api/), /metrics, /healthz and /readyz. Settings: SINK_*
// (see metricssink.Config), the shared NATS_* variables and LOG_LEVEL.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/logging"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
)

func main() {
	log := logging.New(metricssink.ServiceName)
	if err := run(log); err != nil {
		log.Error().Err(err).Msg("metrics-sink failed")
		os.Exit(1)
	}
}

func run(log zerolog.Logger) error {
	var cfg metricssink.Config
	if err := envconfig.Process("SINK", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := cfg.WithDefaults(); err != nil {
		return err
	}
	cfg.Logger = &log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	store, err := metricssink.OpenStore(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	// Closed last: Run finishes its batch and the drain flushes the acks first.
	defer func() {
		if err := store.Close(); err != nil {
			log.Error().Err(err).Msg("closing the store")
		}
	}()
	nc, err := bus.Connect(ctx, cfg.ConnConfig, metricssink.ServiceName)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	httpd := obs.NewServer(cfg.MetricsAddr, obs.NewRegistry())
	svc, err := metricssink.New(cfg, js, store, metricssink.WithLogger(log), metricssink.WithMetrics(httpd.Registry()))
	if err == nil {
		err = httpd.Listen()
	}
	if err != nil {
		nc.Close()
		return err
	}
	svc.Register(httpd)
	log.Info().Str("addr", httpd.Addr()).Msg("dashboard, metrics and health endpoints")
	go func() {
		if err := httpd.Run(ctx); err != nil {
			log.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	// A lost ack only means a redelivery, which the store skips.
	return errors.Join(svc.Run(ctx), bus.Drain(nc, cfg.DrainTimeout))
}

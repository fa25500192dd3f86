// Command metrics-sink stores every selection event of ORCH_SELECTIONS in
// SQL (SQLite file by default, PostgreSQL with a postgres:// URL).
// Settings: SINK_* (see metricssink.Config) and the shared NATS_* variables.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "metrics-sink:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg metricssink.Config
	if err := envconfig.Process("SINK", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	cfg.Logger = &logger

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := bus.Connect(ctx, cfg.ConnConfig, "metrics-sink", nats.DrainTimeout(cfg.DrainTimeout))
	if err != nil {
		return err
	}
	defer drain(nc, cfg.DrainTimeout, logger)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if cfg.Provision {
		if err := bus.Provision(ctx, js); err != nil {
			return fmt.Errorf("%w (set SINK_PROVISION=false where the streams are provisioned elsewhere)", err)
		}
	}
	store, err := metricssink.OpenStore(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error().Err(err).Msg("closing the store")
		}
	}()
	svc, err := metricssink.New(cfg, js, store, metricssink.WithLogger(logger))
	if err != nil {
		return err
	}
	if cfg.StatsInterval > 0 {
		go logStats(ctx, svc, cfg.StatsInterval, logger)
	}
	err = svc.Run(ctx)
	logger.Info().Interface("stats", svc.Stats()).Msg("metrics-sink final stats")
	return err
}

func newLogger(level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("SINK_LOG_LEVEL: %w", err)
	}
	var l zerolog.Logger
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(lvl).With().Timestamp().Logger(), nil
}

// logStats reports ingest rate, lag and counters until Prometheus does.
func logStats(ctx context.Context, svc *metricssink.Service, every time.Duration, logger zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := svc.Stats()
			logger.Info().Uint64("inserted", s.Inserted).Uint64("duplicates", s.Duplicates).
				Uint64("poison", s.Poison).Uint64("store_errors", s.StoreErrors).
				Float64("ingest_rate", s.IngestRate).Uint64("consumer_lag", s.ConsumerLag).
				Uint64("ack_pending", s.AckPending).Msg("metrics-sink stats")
		}
	}
}

// drain flushes the acks still buffered and closes the connection, giving
// up after timeout (a lost ack only means a redelivery the store skips).
func drain(nc *nats.Conn, timeout time.Duration, logger zerolog.Logger) {
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn().Err(err).Msg("drain")
		nc.Close()
		return
	}
	deadline := time.Now().Add(timeout + time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !nc.IsClosed() {
		logger.Warn().Dur("timeout", timeout).Msg("drain timed out; closing")
		nc.Close()
	}
}

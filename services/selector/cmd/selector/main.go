// Command selector answers selection requests on orch.select.
// Configuration is from the environment (SELECTOR_*, NATS_*).
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/logging"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

func main() {
	log := logging.New("selector")
	if err := run(log); err != nil {
		log.Error().Err(err).Msg("selector stopped")
		os.Exit(1)
	}
}

func run(log zerolog.Logger) error {
	var cfg selector.Config
	if err := envconfig.Process("SELECTOR", &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Logger = &log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := bus.Connect(ctx, cfg.ConnConfig, "selector")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		err = bus.Provision(ctx, js)
	}
	if err != nil {
		// Locked-down accounts cannot create streams: `orchestrator provision` does it.
		log.Warn().Err(err).Msg("could not provision streams and buckets; expecting them to exist")
	}
	// Decision events travel on their own connection (see selector.WithEventConn).
	events, err := bus.Connect(ctx, cfg.ConnConfig, "selector-events")
	if err != nil {
		nc.Close()
		return err
	}
	httpd := obs.NewServer(cfg.MetricsAddr, obs.NewRegistry())
	svc, err := selector.New(cfg, nc, selector.WithLogger(log), selector.WithMetrics(httpd.Registry()), selector.WithEventConn(events))
	if err == nil { // a taken metrics port fails the start, not only /healthz
		err = httpd.Listen()
	}
	if err != nil {
		nc.Close()
		events.Close()
		return err
	}
	httpd.AddCheck("selector", svc.Check)
	go func() {
		if err := httpd.Run(ctx); err != nil {
			log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	return errors.Join(svc.Run(ctx), bus.Drain(nc, cfg.DrainTimeout), bus.Drain(events, cfg.DrainTimeout))
}

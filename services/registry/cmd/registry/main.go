// Command registry serves the model registry (orch.registry.*) and owns the
// orch_models, orch_categories and orch_config buckets. Configuration is from
// the environment (REGISTRY_*, NATS_*; see registry.Config).
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
	"github.com/nlocalmodels/orchestrator/services/registry"
)

// drainTimeout bounds the flush of the last replies on shutdown.
const drainTimeout = 5 * time.Second

func main() {
	log := logging.New("registry")
	if err := run(log); err != nil {
		log.Error().Err(err).Msg("registry stopped")
		os.Exit(1)
	}
}

func run(log zerolog.Logger) error {
	var cfg registry.Config
	if err := envconfig.Process("REGISTRY", &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Logger = &log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := bus.Connect(ctx, cfg.ConnConfig, "registry")
	if err != nil {
		return err
	}
	httpd := obs.NewServer(cfg.MetricsAddr, obs.NewRegistry())
	svc, err := registry.New(cfg, nc, registry.WithLogger(log), registry.WithMetrics(httpd.Registry()))
	if err == nil { // a taken metrics port fails the start, not only /healthz
		err = httpd.Listen()
	}
	if err != nil {
		nc.Close()
		return err
	}
	httpd.AddCheck("registry", svc.Check)
	go func() {
		if err := httpd.Run(ctx); err != nil {
			log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	return errors.Join(svc.Run(ctx), bus.Drain(nc, drainTimeout))
}

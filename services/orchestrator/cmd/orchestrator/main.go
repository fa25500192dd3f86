// Command orchestrator is the model orchestrator's one binary: `serve` runs
// embedded NATS and every service in one process; the other verbs (select,
// registry, weights, config, report, events, whatif, gpus, provision) are
// clients of the services on NATS. See `orchestrator --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal a second one kills at once, should the ordered
	// shutdown hang.
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/logging"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/allinone"
)

// serveEnv is serve's environment (prefix ORCH_); flags override it.
type serveEnv struct {
	Port              int           `default:"4222"`
	DataDir           string        `split_words:"true" default:"data/nats"`
	DatabaseURL       string        `split_words:"true" default:"data/selections.db"`
	Services          string        `default:"all"`
	Simulate          int           `default:"8"`
	GPUSource         string        `envconfig:"GPU_SOURCE" default:"auto"`
	TelemetryInterval time.Duration `split_words:"true" default:"5s"`
	Seed              bool          `default:"true"`
	Provision         bool          `default:"true"`
	ShutdownTimeout   time.Duration `split_words:"true" default:"30s"`
	MetricsAddr       string        `split_words:"true" default:"127.0.0.1:9102"`
}

func (a *app) serveCmd() *cobra.Command {
	var env serveEnv
	envErr := envconfig.Process("ORCH", &env)
	var services string
	cfg := allinone.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything in one process: embedded NATS, registry, selector, metrics-sink, GPU telemetry",
		Long: `serve starts an embedded NATS server (JetStream, loopback only, data in
--data-dir), provisions its streams and buckets, seeds the registry with the
example MODEL_REGISTRY.json and task_categories.json when it is empty, and
runs the four services in this process. GPU telemetry reads NVML; without a
driver it simulates --simulate GPUs of mixed real types and says so.

With NATS_URL (or --nats-url) it joins that NATS instead of embedding one;
--services limits what runs here. Ctrl-C stops the selector first (no new
selections, buffered events flushed), then the sink once it has stored every
event, then NATS. Settings also come from ORCH_PORT, ORCH_DATA_DIR,
ORCH_DATABASE_URL, ORCH_SERVICES, ORCH_SIMULATE, ORCH_GPU_SOURCE,
ORCH_TELEMETRY_INTERVAL, ORCH_SEED, ORCH_PROVISION, ORCH_SHUTDOWN_TIMEOUT,
ORCH_METRICS_ADDR.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return usage(cmd, "ORCH_* settings: %v", envErr)
			}
			var err error
			if cfg.Services, err = allinone.ParseServices(services); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			if cfg.Port == 0 || cfg.Port < -1 || cfg.Port > 65535 {
				return usage(cmd, "--port %d: want 1..65535, or -1 for any free port", cfg.Port)
			}
			switch cfg.GPUSource {
			case gputelemetry.SourceAuto, gputelemetry.SourceNVML, gputelemetry.SourceSimulated:
			default:
				return usage(cmd, "--gpu-source %q: want auto, nvml or simulated", cfg.GPUSource)
			}
			conn, err := a.connConfig()
			if err != nil {
				return err
			}
			if a.natsURL != "" || a.getenv("NATS_URL") != "" {
				cfg.Embedded = false
				cfg.Conn = conn
			}
			return a.serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Port, "port", env.Port, "client port of the embedded NATS (-1: any free port)")
	f.StringVar(&cfg.DataDir, "data-dir", env.DataDir, "JetStream storage of the embedded NATS")
	f.StringVar(&cfg.DatabaseURL, "db", env.DatabaseURL, "metrics-sink store: a SQLite file or a postgres:// URL")
	f.StringVar(&services, "services", env.Services, "services to run here: all, or a list of "+strings.Join(allinone.AllServices, ","))
	f.IntVar(&cfg.SimulateGPUs, "simulate", env.Simulate, "how many GPUs (of mixed types) to simulate when no NVML is found")
	f.StringVar(&cfg.GPUSource, "gpu-source", env.GPUSource, "auto (NVML, else simulated), nvml or simulated")
	f.DurationVar(&cfg.TelemetryInterval, "telemetry-interval", env.TelemetryInterval, "GPU sampling interval")
	f.BoolVar(&cfg.Seed, "seed", env.Seed, "import the example registry into empty buckets")
	f.BoolVar(&cfg.Provision, "provision", env.Provision, "create the streams and buckets at start")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", env.ShutdownTimeout, "bound on the ordered shutdown")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", env.MetricsAddr, "serve /metrics, /healthz and /readyz here ('' for none)")
	return cmd
}

func (a *app) serve(ctx context.Context, cfg allinone.Config) error {
	sys, err := allinone.Start(ctx, cfg, logging.New)
	if err != nil {
		if !cfg.Embedded && errors.Is(err, bus.ErrConnect) {
			err = fmt.Errorf("%w (serve joins the NATS of NATS_URL or --nats-url when one is given; without them it embeds its own)", err)
		}
		return err
	}
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	}
	if err := printBanner(a.stdout, sys.Info()); err != nil {
		sctx, cancel := stopCtx()
		defer cancel()
		return errors.Join(err, sys.Shutdown(sctx))
	}
	select {
	case <-ctx.Done():
	case <-sys.Failed():
	}
	fmt.Fprintln(a.stderr, "orchestrator: shutting down (selections first, then the sink once it has stored every event, then NATS)")
	sctx, cancel := stopCtx()
	defer cancel()
	err = errors.Join(sys.Err(), sys.Shutdown(sctx))
	if err == nil {
		fmt.Fprintln(a.stderr, "orchestrator: stopped cleanly")
	}
	return err
}

// defaultClientURL is where the client verbs look without NATS_URL.
const defaultClientURL = "nats://127.0.0.1:4222"

func printBanner(w io.Writer, info allinone.Info) error {
	b := &strings.Builder{}
	fmt.Fprintln(b, "orchestrator serve: ready")
	where := "joined"
	if info.Embedded {
		where = "embedded, JetStream in " + info.DataDir
	}
	t := newTable(b)
	t.row("  NATS", fmt.Sprintf("%s (%s)", info.NATSURL, where))
	t.row("  services", strings.Join(info.Services, ", "))
	if info.DatabaseURL != "" {
		kind := "SQLite"
		if strings.HasPrefix(info.DatabaseURL, "postgres") {
			kind = "PostgreSQL"
		}
		t.row("  decisions", fmt.Sprintf("%s %s, table selection_metrics", kind, bus.RedactURL(info.DatabaseURL)))
	}
	switch info.GPUSource {
	case "":
	case gputelemetry.SourceSimulated:
		t.row("  GPUs", fmt.Sprintf("%d SIMULATED (no NVML found) on host %s", info.SimulatedGPUs, info.TelemetryHost))
	default:
		t.row("  GPUs", fmt.Sprintf("%s on host %s", strings.ToUpper(info.GPUSource), info.TelemetryHost))
	}
	if info.DashboardURL != "" {
		t.row("  dashboard", info.DashboardURL)
	}
	if info.MetricsURL != "" {
		t.row("  metrics", info.MetricsURL+"/metrics, /healthz, /readyz")
	}
	t.row("  subjects", bus.SelectSubject+" (select), "+bus.RegistrySubjectPrefix+".> (registry API), orch.sink.> (reports)")
	t.row(" ", bus.TelemetrySubjectPrefix+"<host>.<index> -> stream "+bus.TelemetryStream)
	t.row(" ", bus.SelectionEventSubjectPrefix+"<category> -> stream "+bus.SelectionStream)
	if err := t.flush(); err != nil {
		return err
	}
	env := ""
	if info.NATSURL != defaultClientURL {
		env = "NATS_URL=" + info.NATSURL + " "
	}
	fmt.Fprintln(b, "\ntry:")
	fmt.Fprintf(b, "  %sorchestrator select --category code\n", env)
	server := ""
	if env != "" {
		server = "--server " + info.NATSURL + " "
	}
	fmt.Fprintf(b, "  nats %sreq %s '{\"task_category\":\"code\"}'\n", server, bus.SelectSubject)
	if info.DatabaseURL != "" && !strings.HasPrefix(info.DatabaseURL, "postgres") {
		fmt.Fprintf(b, "  sqlite3 %s 'SELECT task_category, selected_model, COUNT(*) FROM selection_metrics GROUP BY 1, 2'\n",
			strings.TrimPrefix(strings.TrimPrefix(info.DatabaseURL, "sqlite://"), "sqlite:"))
	}
	fmt.Fprintf(b, "  %sorchestrator report models-per-category\n", env)
	fmt.Fprintf(b, "  %sorchestrator gpus\n", env)
	fmt.Fprintf(b, "  %sorchestrator events tail\n", env)
	fmt.Fprintf(b, "  %sorchestrator config set gpu_aware=false    # the rollback plan, live\n", env)
	fmt.Fprintln(b, "Ctrl-C stops everything.")
	_, err := io.WriteString(w, b.String())
	return err
}

// Package cli is the orchestrator command line: `serve` runs the whole
// system in one process; the other verbs are clients of the services on
// NATS (NATS_URL, default nats://127.0.0.1:4222, and the shared NATS_*
// credentials).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// Version is the orchestrator's version, set at build time with
// -ldflags "-X github.com/nlocalmodels/orchestrator/services/orchestrator/internal/cli.Version=...".
var Version = "dev"

// app holds what every command shares: the output streams and the global flags.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	natsURL string
	json    bool
	timeout time.Duration
}

// Execute runs the command line args (without the program name) and returns
// the process exit code: 0, 1 for a failure, 2 for a usage error, 3 for a
// change that got no reply in time (it may have been applied). Errors are
// printed on stderr, with every problem a service listed.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	printError(stderr, err)
	if errors.Is(err, ErrOutcomeUnknown) {
		return 3
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "see '%s --help'\n", ue.cmd)
		return 2
	}
	if strings.HasPrefix(err.Error(), "unknown command ") { // cobra's, for a verb it does not have
		fmt.Fprintf(stderr, "see '%s --help'\n", root.Name())
		return 2
	}
	return 1
}

// negativeNumberRE matches pflag's error for an argument such as -1, which
// it reads as a cluster of short flags.
var negativeNumberRE = regexp.MustCompile(`^unknown shorthand flag: '.' in (-[0-9.][0-9.eE+-]*)$`)

// usageError is a command line the command cannot take.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)}
}

// argsUsage wraps a cobra positional-argument check so that its error is a usage error.
func argsUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: %w", ErrUsage, err)}
		}
		return nil
	}
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "orchestrator",
		Short: "Pick the local LLM and the GPU that run a task",
		Long: `orchestrator is the model orchestrator's one binary.

  orchestrator serve                  embedded NATS + registry, selector, metrics-sink, GPU telemetry
  orchestrator select --category code ask which model and GPU should run a task

The other verbs talk to the services over NATS: NATS_URL (default
nats://127.0.0.1:4222) and NATS_CREDS, NATS_NKEY, NATS_USER, NATS_PASSWORD,
NATS_TOKEN, NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY.

Rollback plan (the seed's "disable GPU monitoring"), live, no redeploy:
  orchestrator config set gpu_aware=false

Exit status: 0 done, 1 failed, 2 a command line it cannot take, 3 a change
that got no reply in time (it may have been applied: look before retrying).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if a.timeout <= 0 {
			return usage(cmd, "--timeout %s must be positive", a.timeout)
		}
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if m := negativeNumberRE.FindStringSubmatch(err.Error()); m != nil {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: %s is read as a flag: put -- before the arguments to pass a negative number (e.g. `%s -- ARGS`)", ErrUsage, m[1], cmd.CommandPath())}
		}
		return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: %w", ErrUsage, err)}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats-url", "", "NATS server URL (default $NATS_URL, else nats://127.0.0.1:4222)")
	pf.BoolVar(&a.json, "json", false, "print JSON instead of tables")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for a service's reply")

	root.AddCommand(
		a.serveCmd(), a.selectCmd(), a.registryCmd(), a.weightsCmd(), a.configCmd(),
		a.reportCmd(), a.eventsCmd(), a.whatifCmd(), a.gpusCmd(), a.provisionCmd(), a.versionCmd(),
	)
	return root
}

// connConfig is the shared NATS settings from the environment, with
// --nats-url taking precedence over NATS_URL.
func (a *app) connConfig() (bus.ConnConfig, error) {
	var cfg bus.ConnConfig
	if err := envconfig.Process("", &cfg); err != nil {
		return cfg, fmt.Errorf("%w: NATS settings: %w", ErrUsage, err)
	}
	if a.natsURL != "" {
		cfg.URL = a.natsURL
	}
	return cfg, nil
}

// connect opens a client connection; connection trouble is logged at warn
// level only, so that tables stay clean.
func (a *app) connect(ctx context.Context, name string) (*nats.Conn, error) {
	cfg, err := a.connConfig()
	if err != nil {
		return nil, err
	}
	lg := zerolog.New(a.stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	cfg.Logger = &lg
	// The services log a reconnect as info; here it follows the warning of
	// the disconnect, which would otherwise be the last word.
	reconnected := nats.ReconnectHandler(func(nc *nats.Conn) {
		lg.Warn().Str("url", bus.RedactURL(nc.ConnectedUrl())).Msg("nats reconnected")
	})
	nc, err := bus.Connect(ctx, cfg, "orchestrator "+name, reconnected)
	if err != nil {
		return nil, fmt.Errorf("%w (is `orchestrator serve` running? set NATS_URL or --nats-url to reach another server)", err)
	}
	return nc, nil
}

// withJetStream connects and hands fn the JetStream API; the connection is
// closed afterwards.
func (a *app) withJetStream(ctx context.Context, name string, fn func(nc *nats.Conn, js jetstream.JetStream) error) error {
	nc, err := a.connect(ctx, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return fn(nc, js)
}

// withConn connects and hands fn the connection; it is closed afterwards.
func (a *app) withConn(ctx context.Context, name string, fn func(nc *nats.Conn) error) error {
	nc, err := a.connect(ctx, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	return fn(nc)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if a.json {
				return a.printJSON(map[string]string{"version": Version})
			}
			_, err := fmt.Fprintln(a.stdout, "orchestrator", Version)
			return err
		},
	}
}

func (a *app) provisionCmd() *cobra.Command {
	var replicas int
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Create or update the streams and KV buckets (for accounts whose services may not)",
		Long: `provision runs bus.Provision: it creates or updates the ORCH_TELEMETRY and
ORCH_SELECTIONS streams and the orch_models, orch_categories and orch_config
buckets. Running it again is harmless. Run it as an admin
where the services' own accounts may not create streams.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("selection-max-age") && maxAge <= 0 {
				return usage(cmd, "--selection-max-age %s must be positive", maxAge)
			}
			ctx := cmd.Context()
			return a.withJetStream(ctx, "provision", func(_ *nats.Conn, js jetstream.JetStream) error {
				var opts []bus.ProvisionOption
				if cmd.Flags().Changed("replicas") { // else each stream keeps its count (new ones R1)
					opts = append(opts, bus.WithReplicas(replicas))
				}
				if maxAge > 0 {
					opts = append(opts, bus.WithSelectionMaxAge(maxAge))
				}
				if err := bus.Provision(ctx, js, opts...); err != nil {
					return err
				}
				st, err := js.Stream(ctx, bus.SelectionStream)
				if err != nil {
					return err
				}
				have := st.CachedInfo().Config.Replicas
				if a.json {
					return a.printJSON(map[string]any{"provisioned": true, "replicas": have})
				}
				fmt.Fprintf(a.stdout, "provisioned streams %s, %s and buckets %s, %s, %s (%s has %d replica(s))\n",
					bus.TelemetryStream, bus.SelectionStream, bus.ModelsBucket, bus.CategoriesBucket,
					bus.ConfigBucket, bus.SelectionStream, have)
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 1, "replicas of every stream and bucket (3 in a cluster); without it each keeps its count and new ones get 1")
	cmd.Flags().DurationVar(&maxAge, "selection-max-age", 0, "how long decision events are kept (default 720h)")
	return cmd
}

// isTerminal reports whether w is a terminal, for live redraws.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/cfgpatch"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and switch the live selection config (feature switches, confidence, thresholds)",
		Args:  argsUsage(cobra.NoArgs),
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "get [KEY...]",
		Short:   "Print the selection config, or the values of the keys given",
		Example: "  orchestrator config get\n  orchestrator config get gpu_aware tie_epsilon",
		RunE: func(cmd *cobra.Command, keys []string) error {
			valid := map[string]bool{}
			for _, k := range cfgpatch.KeyNames() {
				valid[k] = true
			}
			for _, k := range keys {
				if !valid[k] {
					return usage(cmd, "unknown key %q (valid keys: %s)", k, strings.Join(cfgpatch.KeyNames(), ", "))
				}
			}
			return a.withConn(cmd.Context(), "config get", func(nc *nats.Conn) error {
				var cfg selection.Config
				if err := a.request(cmd.Context(), nc, registrySubject("config.get"), nil, &cfg); err != nil {
					return err
				}
				if a.json && len(keys) == 0 {
					return a.printJSON(cfg)
				}
				values := map[string]string{}
				for _, kv := range cfgpatch.Flatten(cfg) {
					if len(keys) == 0 || slices.Contains(keys, kv[0]) {
						values[kv[0]] = kv[1]
					}
				}
				if a.json {
					return a.printJSON(values)
				}
				t := newTable(a.stdout, "KEY", "VALUE")
				for _, kv := range cfgpatch.Flatten(cfg) {
					if _, ok := values[kv[0]]; ok {
						t.row(kv[0], kv[1])
					}
				}
				return t.flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change config values live; selectors apply them at once, no redeploy",
		Long: `set merges the given values onto the stored selection config (the registry's
config.patch) and prints what changed. Keys are the config's JSON names,
nested ones dotted; values are read as their field's type.

Rollback plan (the seed's "disable GPU monitoring / revert to basic
selection"), one command, live:

  orchestrator config set gpu_aware=false            # multi_category, no GPU placement
  orchestrator config set multi_category=false       # and back to primary-category models
  orchestrator config set gpu_aware=true multi_category=true   # roll forward

Valid keys: ` + joinKeys() + `.`,
		Example: `  orchestrator config set gpu_aware=false
  orchestrator config set confidence.primary=0.95 tie_epsilon=0.02`,
		Args: argsUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := cfgpatch.Parse(args)
			if err != nil {
				if errors.Is(err, cfgpatch.ErrUnknownKey) || errors.Is(err, cfgpatch.ErrSyntax) || errors.Is(err, cfgpatch.ErrBadValue) || errors.Is(err, cfgpatch.ErrRepeatedKey) {
					return &usageError{cmd: cmd.CommandPath(), err: err}
				}
				return err
			}
			ctx := cmd.Context()
			return a.withConn(ctx, "config set", func(nc *nats.Conn) error {
				var before, after selection.Config
				if err := a.request(ctx, nc, registrySubject("config.get"), nil, &before); err != nil {
					return err
				}
				if err := a.change(ctx, nc, registrySubject("config.patch"), patch, &after, "orchestrator config get"); err != nil {
					return err
				}
				a.awaitSelectors(ctx, nc, bus.ConfigBucket)
				if a.json {
					return a.printJSON(after)
				}
				old := cfgpatch.Flatten(before)
				changed := 0
				for i, kv := range cfgpatch.Flatten(after) {
					if kv[1] != old[i][1] {
						fmt.Fprintf(a.stdout, "%s: %s -> %s\n", kv[0], old[i][1], kv[1])
						changed++
					}
				}
				if changed == 0 {
					fmt.Fprintln(a.stdout, "unchanged: the config already had these values")
				}
				return nil
			})
		},
	})
	return cmd
}

func joinKeys() string {
	out := ""
	for i, k := range cfgpatch.Keys() {
		if i > 0 {
			out += ", "
		}
		out += k.Name + " (" + k.Kind + ")"
	}
	return out
}

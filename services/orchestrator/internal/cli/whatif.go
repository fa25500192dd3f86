package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/cfgpatch"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/eventlog"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/whatif"
	"github.com/nlocalmodels/orchestrator/services/registry"
)

func (a *app) whatifCmd() *cobra.Command {
	var (
		wf       windowFlags
		specPath string
		category string
		showIDs  int
	)
	cmd := &cobra.Command{
		Use:   "whatif --config FILE --since D [--until D]",
		Short: "Re-score recorded decisions under other weights or switches: how many would change?",
		Long: `whatif reads the decisions recorded in the window and decides each again with
the current registry and config changed by FILE, on the GPUs the decision saw
(with their reservations), at its instant and with its tie seed. A decision
changes when the new choice is another model and the recorded model is not
within the new tie_epsilon of the new best.

FILE is a JSON object of selection config fields (any subset, merged onto the
current config like 'config set') and, under "weights", benchmark weights per
category:

  {"gpu_aware": false, "confidence": {"primary": 0.95},
   "weights": {"code": {"HumanEval": 1.5, "MBPP": 0.8}}}`,
		Example: "  orchestrator whatif --config humaneval.json --since 24h",
		Args:    argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if specPath == "" {
				return usage(cmd, "--config FILE is required")
			}
			if showIDs < 0 {
				return usage(cmd, "--show %d must not be negative", showIDs)
			}
			w, err := wf.window(cmd)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(specPath)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrFile, err)
			}
			spec, err := whatif.ParseSpec(bytes.TrimPrefix(data, utf8BOM))
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrFile, specPath, err)
			}
			ctx := cmd.Context()
			return a.withJetStream(ctx, "whatif", func(nc *nats.Conn, js jetstream.JetStream) error {
				cat, cfg, err := a.currentCatalog(ctx, nc)
				if err != nil {
					return err
				}
				a.noteCategoryNotIn(category, cat.Categories)
				newCat, newCfg, err := spec.Apply(cat, cfg)
				if err != nil {
					return fmt.Errorf("%s: %w", specPath, err)
				}
				rs, err := whatif.NewRescorer(newCat, newCfg)
				if err != nil {
					return err
				}
				if !a.json {
					a.printSpecChanges(cfg, newCfg, spec)
				}
				tally := whatif.NewTally(showIDs)
				prog := newProgress(a.stderr)
				rescored := 0
				st, err := eventlog.Replay(ctx, js, w, func(r eventlog.Record) error {
					if category != "" && r.Event.TaskCategory != category {
						return nil
					}
					tally.Add(rs.Rescore(&r.Event))
					rescored++
					return nil
				}, func(scanned, total uint64) {
					prog.update(false, "read %d of %d messages", scanned, total)
				})
				prog.update(true, "re-scored %d of %d events read (%d of %d messages, %d undecodable)", rescored, st.Delivered, st.Scanned, st.Total, st.Undecodable)
				if err != nil {
					return err
				}
				return a.printWhatif(tally.Report())
			})
		},
	}
	cmd.Flags().StringVar(&specPath, "config", "", "JSON file: config fields and/or \"weights\" overrides (required)")
	wf.add(cmd, "start of the window: duration before now (e.g. 24h) or RFC 3339 time (required)")
	cmd.Flags().StringVar(&category, "category", "", "only decisions of this task category")
	cmd.Flags().IntVar(&showIDs, "show", 10, "how many changed event ids to list")
	return cmd
}

// currentCatalog fetches the registry (export) and the selection config.
func (a *app) currentCatalog(ctx context.Context, nc *nats.Conn) (*catalog.Catalog, selection.Config, error) {
	var exp registry.ExportReply
	if err := a.request(ctx, nc, registrySubject("export"), nil, &exp); err != nil {
		return nil, selection.Config{}, err
	}
	var cfg selection.Config
	if err := a.request(ctx, nc, registrySubject("config.get"), nil, &cfg); err != nil {
		return nil, selection.Config{}, err
	}
	reg, err := json.Marshal(exp.Registry)
	if err != nil {
		return nil, selection.Config{}, fmt.Errorf("%w: %w", ErrCatalog, err)
	}
	cats, err := json.Marshal(exp.Categories)
	if err != nil {
		return nil, selection.Config{}, fmt.Errorf("%w: %w", ErrCatalog, err)
	}
	cat, err := catalog.Parse("exported "+catalog.RegistryFileName, reg, "exported "+catalog.CategoriesFileName, cats)
	if err != nil {
		return nil, selection.Config{}, fmt.Errorf("%w: %w", ErrCatalog, err)
	}
	return cat, cfg, nil
}

// printSpecChanges says what the what-if changes, before the long part.
func (a *app) printSpecChanges(before, after selection.Config, spec whatif.Spec) {
	old := cfgpatch.Flatten(before)
	n := 0
	for i, kv := range cfgpatch.Flatten(after) {
		if kv[1] != old[i][1] {
			fmt.Fprintf(a.stdout, "config  %s: %s -> %s\n", kv[0], old[i][1], kv[1])
			n++
		}
	}
	for _, c := range sortedKeys(spec.Weights) {
		for _, b := range sortedKeys(spec.Weights[c]) {
			fmt.Fprintf(a.stdout, "weight  %s/%s -> %s\n", c, b, fmtFloat(spec.Weights[c][b]))
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(a.stdout, "no change to the current config or weights: expect no changed decisions")
	}
}

func (a *app) printWhatif(rep whatif.Report) error {
	if a.json {
		return a.printJSON(rep)
	}
	fmt.Fprintf(a.stdout, "\nevents read:                  %d\n", rep.Read)
	fmt.Fprintf(a.stdout, "decisions that would change:  %d (%.1f%%)\n", rep.Changed, rep.ChangedPct)
	if rep.Failed > 0 {
		fmt.Fprintf(a.stdout, "  of which no model at all:   %d\n", rep.Failed)
		for _, e := range sortedKeys(rep.Errors) {
			fmt.Fprintf(a.stdout, "    %d x %s\n", rep.Errors[e], e)
		}
	}
	if rep.Unplaced > 0 {
		fmt.Fprintf(a.stdout, "note: %d decision(s) were made without GPU placement and recorded no GPU; they were re-scored without placement too\n", rep.Unplaced)
	}
	if len(rep.Transitions) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	t := newTable(a.stdout, "CATEGORY", "RECORDED MODEL", "", "NEW MODEL", "COUNT")
	for _, tr := range rep.Transitions {
		to := tr.To
		if to == "" {
			to = "(none)"
		}
		t.row(tr.Category, tr.From, "->", to, tr.Count)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\nfirst %d changed event(s):\n", len(rep.ChangedEventIDs))
	for _, id := range rep.ChangedEventIDs {
		fmt.Fprintln(a.stdout, "  "+id)
	}
	return nil
}

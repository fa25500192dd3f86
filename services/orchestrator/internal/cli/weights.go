package cli

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/services/registry"
)

func (a *app) weightsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "weights",
		Short: "Read and set a category's benchmark weights (the seed's setBenchmarkWeight)",
		Args:  argsUsage(cobra.NoArgs),
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "get [CATEGORY]",
		Short:   "Print the benchmark weights of a category (of every category without one)",
		Example: "  orchestrator weights get code",
		Args:    argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withConn(ctx, "weights get", func(nc *nats.Conn) error {
				var cats []catalog.Category
				if len(args) == 1 {
					var c catalog.Category
					if err := a.request(ctx, nc, registrySubject("categories.get"), registry.NameRequest{Name: args[0]}, &c); err != nil {
						return err
					}
					cats = []catalog.Category{c}
				} else if err := a.request(ctx, nc, registrySubject("categories.list"), nil, &cats); err != nil {
					return err
				}
				return a.printWeights(cats)
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "set CATEGORY BENCHMARK WEIGHT",
		Short: "Set a benchmark's weight in a category; 0 stops weighing it",
		Long: `set changes one weight in the registry; selectors pick it up at once.
The benchmark must be declared in task_categories.json; weight 0 removes it
from the category (a category must keep at least one weight).`,
		Example: "  orchestrator weights set code HumanEval 1.5\n  orchestrator weights set code MultiPL-E 0",
		Args:    argsUsage(cobra.ExactArgs(3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := strconv.ParseFloat(args[2], 64)
			if err != nil {
				return usage(cmd, "weight %q is not a number", args[2])
			}
			if math.IsNaN(w) || math.IsInf(w, 0) {
				return usage(cmd, "weight %q must be a finite number", args[2])
			}
			ctx := cmd.Context()
			return a.withConn(ctx, "weights set", func(nc *nats.Conn) error {
				before, rationale, _ := a.weightOf(ctx, nc, args[0], args[1])
				var c catalog.Category
				req := registry.WeightRequest{Category: args[0], Benchmark: args[1], Weight: &w}
				if err := a.change(ctx, nc, registrySubject("weights.set"), req, &c, "orchestrator weights get "+args[0]); err != nil {
					return err
				}
				a.awaitSelectors(ctx, nc, bus.CategoriesBucket)
				if a.json {
					return a.printJSON(c)
				}
				after := "removed"
				if w != 0 {
					after = fmtFloat(w)
				}
				fmt.Fprintf(a.stdout, "%s: %s %s -> %s\n", c.Name, args[1], before, after)
				if w == 0 && rationale != "" { // it goes with the weight: show it, to put back by hand
					fmt.Fprintf(a.stderr, "note: its rationale went with it: %q\n", rationale)
				}
				return a.printWeights([]catalog.Category{c})
			})
		},
	})
	return cmd
}

// weightOf is the current weight of a benchmark in a category ("unweighted"
// when it has none) and its rationale, for showing what set changed.
func (a *app) weightOf(ctx context.Context, nc *nats.Conn, category, benchmark string) (weight, rationale string, err error) {
	var c catalog.Category
	if err := a.request(ctx, nc, registrySubject("categories.get"), registry.NameRequest{Name: category}, &c); err != nil {
		return "?", "", err
	}
	if w, ok := c.Weights[benchmark]; ok {
		return fmtFloat(w), c.Rationale[benchmark], nil
	}
	return "unweighted", "", nil
}

func (a *app) printWeights(cats []catalog.Category) error {
	if a.json {
		out := make(map[string]map[string]float64, len(cats))
		for _, c := range cats {
			out[c.Name] = c.Weights
		}
		return a.printJSON(out)
	}
	t := newTable(a.stdout, "CATEGORY", "BENCHMARK", "WEIGHT", "RATIONALE")
	for _, c := range cats {
		for _, b := range sortedKeys(c.Weights) {
			t.row(c.Name, b, c.Weights[b], c.Rationale[b])
		}
	}
	return t.flush()
}

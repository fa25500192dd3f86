package cli

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
)

func (a *app) reportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "report [NAME]",
		Short: "Run one of the seed's analysis queries on the stored decisions (no NAME: list them)",
		Long: `report runs a built-in report in the metrics-sink, over the selection_metrics
table: models-per-category, multi-category-effectiveness and
performance-by-category are the seed's three queries, as written.`,
		Example: "  orchestrator report\n  orchestrator report models-per-category",
		Args:    argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withConn(ctx, "report", func(nc *nats.Conn) error {
				if len(args) == 0 {
					var list []metricssink.ReportInfo
					if err := a.request(ctx, nc, metricssink.SubjectReportsList, nil, &list); err != nil {
						return err
					}
					if a.json {
						return a.printJSON(list)
					}
					t := newTable(a.stdout, "REPORT", "DESCRIPTION")
					for _, r := range list {
						t.row(r.Name, r.Description)
					}
					return t.flush()
				}
				var res metricssink.ReportResult
				if err := a.request(ctx, nc, metricssink.SubjectReportsRun, metricssink.RunReportRequest{Name: args[0]}, &res); err != nil {
					return err
				}
				if a.json {
					return a.printJSON(res)
				}
				t := newTable(a.stdout, res.Columns...)
				for _, row := range res.Rows {
					t.row(row...)
				}
				if err := t.flush(); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%d row(s)\n", len(res.Rows))
				return nil
			})
		},
	}
}

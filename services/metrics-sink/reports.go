package metricssink

import (
	"fmt"
	"strings"
)

// The seed's three analysis queries (phase5-deployment-guide.md, section 7),
// verbatim: the SQLite store runs them as written, and a test checks that the
// seed still contains each of them character for character.
const (
	seedModelsPerCategorySQL = `SELECT task_category, selected_model, COUNT(*) as usage_count
FROM selection_metrics
GROUP BY task_category, selected_model
ORDER BY task_category, usage_count DESC;`

	seedMultiCategoryEffectivenessSQL = `SELECT selected_model, 
       COUNT(DISTINCT task_category) as categories_served,
       AVG(confidence_score) as avg_confidence
FROM selection_metrics
GROUP BY selected_model
HAVING categories_served > 1;`

	seedPerformanceByCategorySQL = `SELECT task_category,
       AVG(selection_duration_ms) as avg_duration,
       AVG(final_score) as avg_score
FROM selection_metrics
GROUP BY task_category;`

	// postgresMultiCategoryEffectivenessSQL is the seed's query with the
	// HAVING clause spelled out: PostgreSQL rejects an output alias in
	// HAVING ("column categories_served does not exist"), SQLite accepts it.
	// Same columns, same rows.
	postgresMultiCategoryEffectivenessSQL = `SELECT selected_model, 
       COUNT(DISTINCT task_category) as categories_served,
       AVG(confidence_score) as avg_confidence
FROM selection_metrics
GROUP BY selected_model
HAVING COUNT(DISTINCT task_category) > 1;`
)

// Names of the built-in reports.
const (
	ReportModelsPerCategory          = "models-per-category"
	ReportMultiCategoryEffectiveness = "multi-category-effectiveness"
	ReportPerformanceByCategory      = "performance-by-category"
)

// ReportInfo describes a built-in report.
type ReportInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// ReportResult is a report's table: Rows[i][j] is the value of Columns[j]
// (int64, float64, string, bool or nil).
type ReportResult struct {
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

type reportDef struct {
	ReportInfo
	sqlite   string
	postgres string
}

var reportDefs = []reportDef{
	{
		ReportInfo: ReportInfo{
			Name:        ReportModelsPerCategory,
			Description: "Models used per category: how often each model was selected for each task category (seed query 1).",
		},
		sqlite:   seedModelsPerCategorySQL,
		postgres: seedModelsPerCategorySQL,
	},
	{
		ReportInfo: ReportInfo{
			Name:        ReportMultiCategoryEffectiveness,
			Description: "Multi-category effectiveness: models serving more than one category, with their average confidence (seed query 2).",
		},
		sqlite:   seedMultiCategoryEffectivenessSQL,
		postgres: postgresMultiCategoryEffectivenessSQL,
	},
	{
		ReportInfo: ReportInfo{
			Name:        ReportPerformanceByCategory,
			Description: "Performance by category: average selection duration (ms) and final score per task category (seed query 3).",
		},
		sqlite:   seedPerformanceByCategorySQL,
		postgres: seedPerformanceByCategorySQL,
	},
}

// Reports lists the built-in reports in a stable order.
func Reports() []ReportInfo {
	out := make([]ReportInfo, len(reportDefs))
	for i, d := range reportDefs {
		out[i] = d.ReportInfo
	}
	return out
}

// reportNames lists the names of the built-in reports, for error messages.
func reportNames() string {
	names := make([]string, len(reportDefs))
	for i, d := range reportDefs {
		names[i] = d.Name
	}
	return strings.Join(names, ", ")
}

func lookupReport(name string) (reportDef, error) {
	for _, d := range reportDefs {
		if d.Name == name {
			return d, nil
		}
	}
	return reportDef{}, fmt.Errorf("%w %q (valid: %s)", ErrUnknownReport, name, reportNames())
}

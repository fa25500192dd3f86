package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/catalog/exampledata"
	"github.com/nlocalmodels/orchestrator/services/registry"
)

// registrySubject is the subject of a registry endpoint, e.g. "models.list".
func registrySubject(endpoint string) string { return bus.RegistrySubjectPrefix + "." + endpoint }

// utf8BOM starts files some editors save; JSON readers may skip it.
var utf8BOM = []byte("\xef\xbb\xbf")

// readJSONFile reads a file that must hold JSON; the service validates the rest.
func readJSONFile(path string) (json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFile, err)
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	if !json.Valid(data) {
		var probe any
		err := json.Unmarshal(data, &probe)
		return nil, fmt.Errorf("%w: %s is not JSON: %w", ErrFile, path, err)
	}
	return data, nil
}

// topKeys lists the top-level keys of a JSON object (none for anything else).
func topKeys(doc json.RawMessage) map[string]bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(doc, &obj) != nil {
		return nil
	}
	keys := make(map[string]bool, len(obj))
	for k := range obj {
		keys[k] = true
	}
	return keys
}

// otherDocument says what a document given as a model or a category is
// instead, when its top-level keys make that plain ("" when they do not):
// the schema's list of problems would not say it.
func otherDocument(kind string, doc json.RawMessage) string {
	keys := topKeys(doc)
	switch {
	case keys == nil:
		return ""
	case kind == "model" && keys["models"]:
		return "a whole registry (it has \"models\"): use `orchestrator registry import`"
	case kind == "model" && !keys["id"] && keys["weights"]:
		return "a category (it has \"weights\", no \"id\"): use `orchestrator registry put category FILE`"
	case kind == "category" && keys["categories"]:
		return "a whole task_categories file (it has \"categories\"): use `orchestrator registry import`"
	case kind == "category" && !keys["weights"] && keys["id"]:
		return "a model (it has \"id\", no \"weights\"): use `orchestrator registry put model FILE`"
	}
	return ""
}

// swappedImport tells an import whose two files are the wrong way round, or
// either of them the other kind ("" when neither is plainly so).
func swappedImport(regPath string, reg json.RawMessage, catPath string, cats json.RawMessage) string {
	rk, ck := topKeys(reg), topKeys(cats)
	regIsCats := rk != nil && !rk["models"] && rk["categories"]
	catsIsReg := ck != nil && !ck["categories"] && ck["models"]
	switch {
	case regIsCats && catsIsReg:
		return fmt.Sprintf("--registry %s holds categories and --categories %s holds models: swap them", regPath, catPath)
	case regIsCats:
		return fmt.Sprintf("--registry %s holds categories, not models: it looks like a %s", regPath, catalog.CategoriesFileName)
	case catsIsReg:
		return fmt.Sprintf("--categories %s holds models, not categories: it looks like a %s", catPath, catalog.RegistryFileName)
	}
	return ""
}

// nameFiles puts the user's file names in place of the registry's own in a
// service error ("task_categories.json: categories[0] ...", "not declared in
// task_categories.json").
func nameFiles(err error, regPath, catPath string) error {
	var se *ServiceError
	if !errors.As(err, &se) {
		return err
	}
	names := strings.NewReplacer(catalog.RegistryFileName, regPath, catalog.CategoriesFileName, catPath)
	se.Description = names.Replace(se.Description)
	for i, p := range se.Problems {
		se.Problems[i] = names.Replace(p)
	}
	return err
}

// kindArg reads the model|category argument of get, put and delete.
func kindArg(cmd *cobra.Command, arg string) (string, error) {
	switch arg {
	case "model", "models":
		return "model", nil
	case "category", "categories":
		return "category", nil
	}
	return "", usage(cmd, "%q: want model or category", arg)
}

func (a *app) registryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Read and change the model registry (models, categories, benchmarks)",
		Args:  argsUsage(cobra.NoArgs),
	}
	cmd.AddCommand(a.registryImportCmd(), a.registryExportCmd(), a.registryListCmd(),
		a.registryGetCmd(), a.registryPutCmd(), a.registryDeleteCmd())
	return cmd
}

func (a *app) registryImportCmd() *cobra.Command {
	var regPath, catPath string
	cmd := &cobra.Command{
		Use:   "import --registry MODEL_REGISTRY.json --categories task_categories.json",
		Short: "Replace the whole registry with two documents (all or nothing)",
		Long: `import sends both documents to the registry, which validates them completely
before writing anything: a document with problems changes nothing, and every
problem is listed. Models and categories the documents lack are removed.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if regPath == "" || catPath == "" {
				return usage(cmd, "both --registry and --categories are required")
			}
			reg, err := readJSONFile(regPath)
			if err != nil {
				return err
			}
			cats, err := readJSONFile(catPath)
			if err != nil {
				return err
			}
			if why := swappedImport(regPath, reg, catPath, cats); why != "" {
				return usage(cmd, "%s", why)
			}
			return a.withConn(cmd.Context(), "registry import", func(nc *nats.Conn) error {
				var rep registry.ImportReply
				if err := a.change(cmd.Context(), nc, registrySubject("import"), registry.ImportRequest{Registry: reg, Categories: cats}, &rep, "orchestrator registry list"); err != nil {
					if errors.Is(err, ErrTooLarge) {
						return fmt.Errorf("%w (%s is %s, %s %s)", err, regPath, fmtSize(int64(len(reg))), catPath, fmtSize(int64(len(cats))))
					}
					return nameFiles(err, regPath, catPath)
				}
				a.awaitSelectors(cmd.Context(), nc, bus.ModelsBucket, bus.CategoriesBucket)
				if a.json {
					return a.printJSON(rep)
				}
				fmt.Fprintf(a.stdout, "imported %s and %s: %d models, %d categories, %d benchmarks (removed %d models, %d categories)\n",
					regPath, catPath, rep.Models, rep.Categories, rep.Benchmarks, rep.RemovedModels, rep.RemovedCategories)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&regPath, "registry", "", "a MODEL_REGISTRY.json document")
	cmd.Flags().StringVar(&catPath, "categories", "", "a task_categories.json document")
	return cmd
}

func (a *app) registryExportCmd() *cobra.Command {
	var outDir string
	cmd := &cobra.Command{
		Use:   "export [--out-dir DIR]",
		Short: "Print the registry as its two documents, or write them into a directory",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withConn(cmd.Context(), "registry export", func(nc *nats.Conn) error {
				var rep registry.ExportReply
				if err := a.request(cmd.Context(), nc, registrySubject("export"), nil, &rep); err != nil {
					return err
				}
				if outDir == "" {
					return a.printJSON(rep)
				}
				if err := os.MkdirAll(outDir, 0o750); err != nil {
					return fmt.Errorf("%w: --out-dir: %w", ErrOutput, err)
				}
				docs := []struct {
					name string
					doc  any
				}{{exampledata.RegistryFile, rep.Registry}, {exampledata.CategoriesFile, rep.Categories}}
				for _, d := range docs {
					data, err := json.MarshalIndent(d.doc, "", "  ")
					if err != nil {
						return err
					}
					path := filepath.Join(outDir, d.name)
					if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
						return fmt.Errorf("%w: %w", ErrOutput, err)
					}
					if !a.json {
						fmt.Fprintln(a.stdout, "wrote", path)
					}
				}
				if a.json {
					return a.printJSON(map[string]any{
						"registry":   filepath.Join(outDir, exampledata.RegistryFile),
						"categories": filepath.Join(outDir, exampledata.CategoriesFile),
						"models":     len(rep.Registry.Models), "category_count": len(rep.Categories.Categories),
					})
				}
				fmt.Fprintf(a.stdout, "%d models, %d categories, %d benchmarks\n",
					len(rep.Registry.Models), len(rep.Categories.Categories), len(rep.Categories.Benchmarks))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&outDir, "out-dir", "", "write MODEL_REGISTRY.json and task_categories.json here")
	return cmd
}

func (a *app) registryListCmd() *cobra.Command {
	return &cobra.Command{
		Use:       "list [models|categories|benchmarks]",
		Short:     "List models (default), categories or benchmarks",
		Args:      argsUsage(cobra.MaximumNArgs(1)),
		ValidArgs: []string{"models", "categories", "benchmarks"},
		RunE: func(cmd *cobra.Command, args []string) error {
			list := a.listModels
			if len(args) == 1 {
				switch args[0] {
				case "models", "model":
				case "categories", "category":
					list = a.listCategories
				case "benchmarks", "benchmark":
					list = a.listBenchmarks
				default:
					return usage(cmd, "%q: want models, categories or benchmarks", args[0])
				}
			}
			ctx := cmd.Context()
			return a.withConn(ctx, "registry list", func(nc *nats.Conn) error { return list(ctx, nc) })
		},
	}
}

func (a *app) listModels(ctx context.Context, nc *nats.Conn) error {
	var models []catalog.Model
	if err := a.request(ctx, nc, registrySubject("models.list"), nil, &models); err != nil {
		return err
	}
	if a.json {
		return a.printJSON(models)
	}
	t := newTable(a.stdout, "ID", "PARAMS", "QUANT", "MEMORY MB", "CONTEXT", "CATEGORIES (primary first)", "ENABLED")
	for _, m := range models {
		t.row(m.ID, fmt.Sprintf("%gB", m.ParametersB), m.Quantization, m.GPUMemoryMB, m.ContextLength,
			strings.Join(m.OrchestrationCategories, ","), !m.Disabled)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%d models\n", len(models))
	return nil
}

func (a *app) listCategories(ctx context.Context, nc *nats.Conn) error {
	var cats []catalog.Category
	if err := a.request(ctx, nc, registrySubject("categories.list"), nil, &cats); err != nil {
		return err
	}
	if a.json {
		return a.printJSON(cats)
	}
	t := newTable(a.stdout, "NAME", "BENCHMARK WEIGHTS", "DESCRIPTION")
	for _, c := range cats {
		t.row(c.Name, fmtWeights(c.Weights), c.Description)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%d categories\n", len(cats))
	return nil
}

func (a *app) listBenchmarks(ctx context.Context, nc *nats.Conn) error {
	var benches []catalog.Benchmark
	if err := a.request(ctx, nc, registrySubject("benchmarks.list"), nil, &benches); err != nil {
		return err
	}
	if a.json {
		return a.printJSON(benches)
	}
	t := newTable(a.stdout, "NAME", "METRIC", "DESCRIPTION")
	for _, b := range benches {
		t.row(b.Name, b.Metric, b.Description)
	}
	return t.flush()
}

func (a *app) registryGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get model ID | get category NAME",
		Short: "Print one model or category as JSON (the document put takes)",
		Args:  argsUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kindArg(cmd, args[0])
			if err != nil {
				return err
			}
			return a.withConn(cmd.Context(), "registry get", func(nc *nats.Conn) error {
				var out json.RawMessage
				var body any = registry.IDRequest{ID: args[1]}
				subject := registrySubject("models.get")
				if kind == "category" {
					body, subject = registry.NameRequest{Name: args[1]}, registrySubject("categories.get")
				}
				if err := a.request(cmd.Context(), nc, subject, body, &out); err != nil {
					return err
				}
				return a.printJSON(out)
			})
		},
	}
}

func (a *app) registryPutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "put model FILE | put category FILE",
		Short: "Add or replace one model or category from a JSON file",
		Long: `put sends one model (or category) document to the registry, which checks it
against its schema and, with the rest of the catalog, against the catalog
rules. A refused document changes nothing and every problem is listed.`,
		Args: argsUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kindArg(cmd, args[0])
			if err != nil {
				return err
			}
			doc, err := readJSONFile(args[1])
			if err != nil {
				return err
			}
			if other := otherDocument(kind, doc); other != "" {
				return usage(cmd, "%s is not a %s document but %s", args[1], kind, other)
			}
			err = a.withConn(cmd.Context(), "registry put", func(nc *nats.Conn) error {
				if kind == "category" {
					var rep registry.CategoryPutReply
					if err := a.change(cmd.Context(), nc, registrySubject("categories.put"), doc, &rep, "orchestrator registry list categories"); err != nil {
						return err
					}
					a.awaitSelectors(cmd.Context(), nc, bus.CategoriesBucket)
					if a.json {
						return a.printJSON(rep)
					}
					fmt.Fprintf(a.stdout, "stored category %s (revision %d)\n", rep.Name, rep.Revision)
					return nil
				}
				var rep registry.ModelPutReply
				if err := a.change(cmd.Context(), nc, registrySubject("models.put"), doc, &rep, "orchestrator registry list models"); err != nil {
					return err
				}
				a.awaitSelectors(cmd.Context(), nc, bus.ModelsBucket)
				if a.json {
					return a.printJSON(rep)
				}
				fmt.Fprintf(a.stdout, "stored model %s (revision %d)\n", rep.ID, rep.Revision)
				return nil
			})
			if errors.Is(err, ErrTooLarge) {
				return fmt.Errorf("%w (%s)", err, args[1])
			}
			return err
		},
	}
}

func (a *app) registryDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete model ID | delete category NAME",
		Short: "Remove one model, or a category no model lists",
		Args:  argsUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kindArg(cmd, args[0])
			if err != nil {
				return err
			}
			return a.withConn(cmd.Context(), "registry delete", func(nc *nats.Conn) error {
				var body any = registry.IDRequest{ID: args[1]}
				subject := registrySubject("models.delete")
				if kind == "category" {
					body, subject = registry.NameRequest{Name: args[1]}, registrySubject("categories.delete")
				}
				if err := a.change(cmd.Context(), nc, subject, body, nil, "orchestrator registry get "+kind+" "+args[1]); err != nil {
					return err
				}
				a.awaitSelectors(cmd.Context(), nc, bus.ModelsBucket, bus.CategoriesBucket)
				if a.json {
					return a.printJSON(map[string]string{"deleted": kind, "name": args[1]})
				}
				fmt.Fprintf(a.stdout, "deleted %s %s\n", kind, args[1])
				return nil
			})
		},
	}
}

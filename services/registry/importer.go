package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/schemas"
)

// parseDocs fully validates a registry and a categories document; the
// error (400 when a document breaks its schema, else 422) lists every
// problem of both.
func parseDocs(regName string, reg []byte, catName string, cats []byte) (*catalog.Catalog, error) {
	cat, err := catalog.Parse(regName, reg, catName, cats)
	if err == nil {
		ids := make([]string, len(cat.Models))
		for i, m := range cat.Models {
			ids[i] = m.ID
		}
		if probs := keyProblems(regName, ids); len(probs) > 0 {
			err = &catalog.ValidationError{Problems: probs}
		}
	}
	if err == nil {
		return cat, nil
	}
	kind := ErrRefused
	if errors.Is(err, catalog.ErrSchema) || schemas.Validate(schemas.ModelRegistryFile, reg) != nil ||
		schemas.Validate(schemas.TaskCategoriesFile, cats) != nil {
		kind = ErrBadRequest
	}
	return nil, fmt.Errorf("%w: %w", kind, err)
}

// importOps plans replacing what snap holds by next so that the buckets
// hold a valid catalog after every single write (selectors watching them
// never see a broken one, and an interrupted import leaves a valid mix):
// the old and new benchmarks together first, then the categories, the
// models, deleting the models and then the categories that next lacks, and
// last the new benchmarks alone. Keys already holding their new value are
// not written.
func (s *Service) importOps(snap *snapshot, next *catalog.Catalog) ([]op, ImportReply, error) {
	reg, cats := next.RegistryFile(), next.CategoriesFile()
	res := ImportReply{Models: len(reg.Models), Categories: len(cats.Categories), Benchmarks: len(cats.Benchmarks)}
	var ops []op
	union := cats.Benchmarks
	if snap.benchmarks.rev != 0 {
		var old []catalog.Benchmark
		if err := json.Unmarshal(snap.benchmarks.value, &old); err != nil {
			return nil, res, fmt.Errorf("%w: %s/%s: %w", ErrStoredInvalid, bus.CategoriesBucket, BenchmarksKey, err)
		}
		for _, b := range old {
			if _, kept := next.Benchmark(b.Name); !kept {
				union = append(slices.Clip(union), b)
			}
		}
	}
	b, err := encode("benchmarks", union)
	if err != nil {
		return nil, res, err
	}
	unionOp, unionWritten := setOp(s.st.categories, BenchmarksKey, snap.benchmarks, b)
	if unionWritten {
		ops = append(ops, unionOp)
	}
	for _, c := range cats.Categories {
		if b, err = encode("category", c); err != nil {
			return nil, res, err
		}
		if o, changed := setOp(s.st.categories, c.Name, snap.categories[c.Name], b); changed {
			ops = append(ops, o)
		}
	}
	for _, m := range reg.Models {
		if b, err = encode("model", m); err != nil {
			return nil, res, err
		}
		if o, changed := setOp(s.st.models, m.ID, snap.models[m.ID], b); changed {
			ops = append(ops, o)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(snap.models)) {
		if _, keep := next.Model(id); !keep {
			ops = append(ops, op{kv: s.st.models, key: id, rev: snap.models[id].rev})
			res.RemovedModels++
		}
	}
	for _, name := range slices.Sorted(maps.Keys(snap.categories)) {
		if _, keep := next.Category(name); !keep {
			ops = append(ops, op{kv: s.st.categories, key: name, rev: snap.categories[name].rev})
			res.RemovedCategories++
		}
	}
	if len(union) > len(cats.Benchmarks) {
		if b, err = encode("benchmarks", cats.Benchmarks); err != nil {
			return nil, res, err
		}
		ops = append(ops, op{kv: s.st.categories, key: BenchmarksKey, value: b, rev: snap.benchmarks.rev, again: unionWritten})
	}
	return ops, res, nil
}

// importDocs validates both documents and only then replaces the registry
// with them. With onlyIfEmpty (seeding) it writes nothing, and returns
// ErrNotEmpty, when the catalog buckets hold anything.
func (s *Service) importDocs(ctx context.Context, regName string, reg []byte, catName string, cats []byte, onlyIfEmpty bool) (ImportReply, error) {
	next, err := parseDocs(regName, reg, catName, cats)
	if err != nil {
		return ImportReply{}, err
	}
	if len(next.Models) == 0 {
		return ImportReply{}, fmt.Errorf("%w: %s lists no models, and selectors keep serving the previous registry rather than none", ErrRefused, regName)
	}
	var res ImportReply
	_, err = s.write(ctx, "import", func(ctx context.Context) ([]op, error) {
		snap, err := s.st.readCatalog(ctx)
		if err != nil {
			return nil, err
		}
		if onlyIfEmpty && !snap.empty() {
			return nil, fmt.Errorf("%w: %s holds %d key(s), %s %d", ErrNotEmpty,
				bus.ModelsBucket, len(snap.models), bus.CategoriesBucket, len(snap.categories))
		}
		var ops []op
		ops, res, err = s.importOps(snap, next)
		return ops, err
	})
	if err != nil {
		return ImportReply{}, err
	}
	return res, nil
}

func (s *Service) importRegistry(ctx context.Context, body []byte) (any, error) {
	var req ImportRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	var missing []string
	for name, doc := range map[string][]byte{"registry": req.Registry, "categories": req.Categories} {
		if len(doc) == 0 || string(doc) == "null" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("%w: import needs both documents; missing %v", ErrBadRequest, missing)
	}
	return s.importDocs(ctx, defaultRegistryName, req.Registry, defaultCategoriesName, req.Categories, false)
}

func (s *Service) exportRegistry(ctx context.Context, _ []byte) (any, error) {
	snap, err := s.st.readCatalog(ctx)
	if err != nil {
		return nil, err
	}
	cat, err := snap.catalog()
	if err != nil {
		return nil, err
	}
	return ExportReply{Registry: cat.RegistryFile(), Categories: cat.CategoriesFile()}, nil
}

// seedBuckets imports the seed catalog when both catalog buckets are empty
// and stores the seed config when none is stored; it never overwrites data.
func (s *Service) seedBuckets(ctx context.Context) error {
	if s.seed == nil {
		s.log.Info().Msg("no seed catalog configured")
	} else {
		res, err := s.importDocs(ctx, s.seed.registryName, s.seed.registry, s.seed.categoriesName, s.seed.categories, true)
		switch {
		case errors.Is(err, ErrNotEmpty):
			s.log.Info().Str("reason", err.Error()).Msg("catalog buckets hold data: not seeding")
		case err != nil:
			return fmt.Errorf("seed catalog: %w", err)
		default:
			s.log.Info().Str("registry", s.seed.registryName).Str("categories", s.seed.categoriesName).
				Int("models", res.Models).Int("categories", res.Categories).Int("benchmarks", res.Benchmarks).
				Msg("seeded empty catalog buckets")
		}
	}
	seeded := false
	_, err := s.write(ctx, "seed config", func(ctx context.Context) ([]op, error) {
		seeded = false
		cur, err := readKey(ctx, s.st.config, bus.SelectionConfigKey)
		if err != nil || cur.rev != 0 {
			return nil, err
		}
		b, err := encode("selection config", s.seedConfig)
		if err != nil {
			return nil, err
		}
		seeded = true
		return []op{{kv: s.st.config, key: bus.SelectionConfigKey, value: b}}, nil
	})
	if err != nil {
		return fmt.Errorf("seed config: %w", err)
	}
	source := "defaults"
	if s.cfg.SeedConfig != "" {
		source = s.cfg.SeedConfig
	}
	if seeded {
		s.log.Info().Str("source", source).Msg("seeded selection config")
	} else {
		s.log.Info().Msg("selection config present: not seeding")
	}
	return nil
}

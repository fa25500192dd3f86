package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/schemas"
)

// decodeRequest decodes a request body strictly: unknown fields and
// trailing data are refused.
func decodeRequest(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty body; want a JSON object", ErrBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the request object", ErrBadRequest)
	}
	return nil
}

// encode marshals a stored or replied value. The values are validated
// catalog and config types, whose encoding fails only on NaN or ±Inf.
func encode(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return b, nil
}

// decodeStored decodes a stored value; one that does not decode is
// reported with its key.
func decodeStored(bucket, key string, e entry, v any) error {
	if err := json.Unmarshal(e.value, v); err != nil {
		return fmt.Errorf("%w: %s/%s (revision %d): %w", ErrStoredInvalid, bucket, key, e.rev, err)
	}
	return nil
}

// usableKey reports whether a model id can be a bucket key: the schema lets
// an id end in a dot or hold two in a row, a KV key cannot.
func usableKey(id string) bool {
	return !strings.HasSuffix(id, ".") && !strings.Contains(id, "..")
}

func keyProblems(file string, ids []string) []catalog.Problem {
	var probs []catalog.Problem
	for _, id := range ids {
		if !usableKey(id) {
			probs = append(probs, catalog.Problem{File: file, Entry: fmt.Sprintf("model %q", id), Field: "id",
				Err: fmt.Errorf("%w: %s keys cannot end in a dot or hold two in a row", ErrBadKey, bus.ModelsBucket)})
		}
	}
	return probs
}

// encodeAll encodes each item.
func encodeAll[T any](items []T) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		b, err := encode("catalog entry", it)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// splice puts raw at index i of list, or appends it when i < 0.
func splice(list []json.RawMessage, i int, raw []byte) []json.RawMessage {
	if i < 0 {
		return append(list, raw)
	}
	list[i] = raw
	return list
}

// withRaw validates the catalog cur with one model (category false) or
// category as sent, adding it or replacing the one of the same key. The
// documents are rebuilt and parsed like files, so that every schema
// violation and broken rule of the entry is listed, each once, even where
// the entry does not decode into its Go type.
func withRaw(cur *catalog.Catalog, category bool, key string, raw []byte) (*catalog.Catalog, error) {
	reg, cats := cur.RegistryFile(), cur.CategoriesFile()
	models, errM := encodeAll(reg.Models)
	categories, errC := encodeAll(cats.Categories)
	benchmarks, errB := encode("benchmarks", cats.Benchmarks)
	if err := errors.Join(errM, errC, errB); err != nil {
		return nil, err
	}
	if category {
		categories = splice(categories, slices.IndexFunc(cats.Categories, func(c catalog.Category) bool { return c.Name == key }), raw)
	} else {
		models = splice(models, slices.IndexFunc(reg.Models, func(m catalog.Model) bool { return m.ID == key }), raw)
	}
	regDoc, errR := encode("registry", rawRegistry{Version: reg.Version, Models: models})
	catDoc, errD := encode("categories", rawCategories{Version: cats.Version, Benchmarks: benchmarks, Categories: categories})
	if err := errors.Join(errR, errD); err != nil {
		return nil, err
	}
	return catalog.Parse(defaultRegistryName, regDoc, defaultCategoriesName, catDoc)
}

// refuse classifies an error of a catalog edit: unknown names are 404, a
// schema violation 400, any other broken rule 422.
func refuse(err error) error {
	switch {
	case errors.Is(err, catalog.ErrNotFound): // 404 as it is
		return err
	case errors.Is(err, catalog.ErrSchema):
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	default:
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
}

// editCatalog writes the result of edit, which gets the validated catalog
// as stored and returns the key writes, holding the write lock and retrying
// on conflicts.
func (s *Service) editCatalog(ctx context.Context, what string, edit func(snap *snapshot, cur *catalog.Catalog) ([]op, error)) ([]uint64, error) {
	return s.write(ctx, what, func(ctx context.Context) ([]op, error) {
		snap, err := s.st.readCatalog(ctx)
		if err != nil {
			return nil, err
		}
		cur, err := snap.catalog()
		if err != nil {
			return nil, err
		}
		return edit(snap, cur)
	})
}

// relabel names the put entry's problems after the entry ("model \"x\"")
// rather than the merged document they were checked in
// ("MODEL_REGISTRY.json: models[20] \"x\"", a file and index the caller
// never gave). Stored entries always have names; one without is the put one.
// It reports whether the first problem, which opens the error text, now
// names the entry.
func relabel(err error, what, key string) bool {
	var verr *catalog.ValidationError
	if !errors.As(err, &verr) {
		return false
	}
	for i := range verr.Problems {
		p := &verr.Problems[i]
		if (key != "" && strings.HasSuffix(p.Entry, strconv.Quote(key))) || (key == "" && p.Entry != "" && !strings.Contains(p.Entry, `"`)) {
			p.File, p.Entry = "", what
			if key != "" {
				p.Entry += " " + strconv.Quote(key)
			}
		}
	}
	return len(verr.Problems) > 0 && verr.Problems[0].File == "" && strings.HasPrefix(verr.Problems[0].Entry, what)
}

// putEntry is models.put (category false) and categories.put: the entry is
// checked against its schema and, with the whole catalog, against the rules;
// a 400 or 422 lists every problem of both.
func (s *Service) putEntry(ctx context.Context, body []byte, category bool) (string, uint64, error) {
	what, schema, idField := "model", schemas.Model, "id"
	if category {
		what, schema, idField = "category", schemas.Category, "name"
	}
	doc, err := schemas.Decode(body)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s: %w", ErrBadRequest, what, err)
	}
	kind := ErrRefused
	if schemas.ValidateValue(schema, doc) != nil {
		kind = ErrBadRequest
	}
	obj, _ := doc.(map[string]any)
	key, _ := obj[idField].(string)
	var rev uint64
	revs, err := s.editCatalog(ctx, "put "+what+" "+key, func(snap *snapshot, cur *catalog.Catalog) ([]op, error) {
		next, err := withRaw(cur, category, key, body)
		if err == nil && !category {
			if probs := keyProblems(defaultRegistryName, []string{key}); len(probs) > 0 {
				err = &catalog.ValidationError{Problems: probs}
			}
		}
		if err != nil {
			if relabel(err, what, key) { // the problems name the entry
				return nil, fmt.Errorf("%w: %w", kind, err)
			}
			return nil, fmt.Errorf("%w: %s %q: %w", kind, what, key, err)
		}
		kv, stored := s.st.models, snap.models
		var val any
		if category {
			kv, stored = s.st.categories, snap.categories
			val, _ = next.Category(key)
		} else {
			val, _ = next.Model(key)
		}
		b, err := encode(what, val)
		if err != nil {
			return nil, err
		}
		o, changed := setOp(kv, key, stored[key], b)
		if !changed {
			rev = stored[key].rev
			return nil, nil
		}
		return []op{o}, nil
	})
	if err != nil {
		return "", 0, err
	}
	if len(revs) == 1 {
		rev = revs[0]
	}
	return key, rev, nil
}

func (s *Service) putModel(ctx context.Context, body []byte) (any, error) {
	id, rev, err := s.putEntry(ctx, body, false)
	if err != nil {
		return nil, err
	}
	return ModelPutReply{ID: id, Revision: rev}, nil
}

func (s *Service) putCategory(ctx context.Context, body []byte) (any, error) {
	name, rev, err := s.putEntry(ctx, body, true)
	if err != nil {
		return nil, err
	}
	return CategoryPutReply{Name: name, Revision: rev}, nil
}

func (s *Service) deleteModel(ctx context.Context, body []byte) (any, error) {
	var req IDRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	if req.ID == "" {
		return nil, fmt.Errorf("%w: id is required", ErrBadRequest)
	}
	if _, err := readKey(ctx, s.st.models, req.ID); err != nil { // 400 for what cannot be a key, as get says
		return nil, err
	}
	_, err := s.editCatalog(ctx, "delete model "+req.ID, func(snap *snapshot, cur *catalog.Catalog) ([]op, error) {
		next, err := cur.WithoutModel(req.ID)
		if err != nil {
			return nil, refuse(err)
		}
		if len(next.Models) == 0 {
			return nil, fmt.Errorf("%w: %q is the last model, and selectors keep serving the previous registry rather than none; import a registry to replace it", ErrRefused, req.ID)
		}
		return []op{{kv: s.st.models, key: req.ID, rev: snap.models[req.ID].rev}}, nil
	})
	if err != nil {
		return nil, err
	}
	return ModelDeleteReply(req), nil
}

func (s *Service) deleteCategory(ctx context.Context, body []byte) (any, error) {
	var req NameRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, fmt.Errorf("%w: name is required", ErrBadRequest)
	}
	if _, err := readKey(ctx, s.st.categories, req.Name); err != nil {
		return nil, err
	}
	_, err := s.editCatalog(ctx, "delete category "+req.Name, func(snap *snapshot, cur *catalog.Catalog) ([]op, error) {
		if _, err := cur.WithoutCategory(req.Name); err != nil {
			return nil, refuse(err)
		}
		return []op{{kv: s.st.categories, key: req.Name, rev: snap.categories[req.Name].rev}}, nil
	})
	if err != nil {
		return nil, err
	}
	return CategoryDeleteReply(req), nil
}

func (s *Service) setWeight(ctx context.Context, body []byte) (any, error) {
	var req WeightRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	var missing []string
	for _, f := range []struct {
		name string
		ok   bool
	}{{"category", req.Category != ""}, {"benchmark", req.Benchmark != ""}, {"weight", req.Weight != nil}} {
		if !f.ok {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s required", ErrBadRequest, strings.Join(missing, ", "))
	}
	var updated catalog.Category
	_, err := s.editCatalog(ctx, "set weight "+req.Category+"/"+req.Benchmark, func(snap *snapshot, cur *catalog.Catalog) ([]op, error) {
		next, err := cur.WithBenchmarkWeight(req.Category, req.Benchmark, *req.Weight)
		if err != nil {
			return nil, refuse(err)
		}
		c, _ := next.Category(req.Category)
		updated = *c
		b, err := encode("category", c)
		if err != nil {
			return nil, err
		}
		if o, changed := setOp(s.st.categories, c.Name, snap.categories[c.Name], b); changed {
			return []op{o}, nil
		}
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return updated, nil
}

func (s *Service) listModels(ctx context.Context, _ []byte) (any, error) {
	stored, err := readBucket(ctx, s.st.models)
	if err != nil {
		return nil, err
	}
	return decodeAll[catalog.Model](bus.ModelsBucket, stored)
}

func (s *Service) listCategories(ctx context.Context, _ []byte) (any, error) {
	stored, err := readBucket(ctx, s.st.categories)
	if err != nil {
		return nil, err
	}
	delete(stored, BenchmarksKey)
	return decodeAll[catalog.Category](bus.CategoriesBucket, stored)
}

// decodeAll decodes stored values in key order.
func decodeAll[T any](bucket string, stored map[string]entry) ([]T, error) {
	out := make([]T, 0, len(stored))
	for _, key := range slices.Sorted(maps.Keys(stored)) {
		var v T
		if err := decodeStored(bucket, key, stored[key], &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Service) getModel(ctx context.Context, body []byte) (any, error) {
	var req IDRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	e, err := s.getKey(ctx, s.st.models, "model", "id", req.ID)
	if err != nil {
		return nil, err
	}
	var m catalog.Model
	if err := decodeStored(bus.ModelsBucket, req.ID, e, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Service) getCategory(ctx context.Context, body []byte) (any, error) {
	var req NameRequest
	if err := decodeRequest(body, &req); err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.Name, "_") { // reserved keys are no categories
		return nil, fmt.Errorf("%w: category %q", ErrNotFound, req.Name)
	}
	e, err := s.getKey(ctx, s.st.categories, "category", "name", req.Name)
	if err != nil {
		return nil, err
	}
	var c catalog.Category
	if err := decodeStored(bus.CategoriesBucket, req.Name, e, &c); err != nil {
		return nil, err
	}
	return c, nil
}

// getKey reads the entry of a get request; absent is ErrNotFound.
func (s *Service) getKey(ctx context.Context, kv jetstream.KeyValue, what, field, key string) (entry, error) {
	if key == "" {
		return entry{}, fmt.Errorf("%w: %s is required", ErrBadRequest, field)
	}
	e, err := readKey(ctx, kv, key)
	if err == nil && e.rev == 0 {
		err = fmt.Errorf("%w: %s %q", ErrNotFound, what, key)
	}
	return e, err
}

func (s *Service) listBenchmarks(ctx context.Context, _ []byte) (any, error) {
	e, err := readKey(ctx, s.st.categories, BenchmarksKey)
	if err != nil {
		return nil, err
	}
	out := []catalog.Benchmark{}
	if e.rev == 0 {
		return out, nil
	}
	if err := decodeStored(bus.CategoriesBucket, BenchmarksKey, e, &out); err != nil {
		return nil, err
	}
	return out, nil
}

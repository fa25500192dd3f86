package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// BenchmarksKey is the key of the orch_categories bucket that holds the
// declared benchmarks, a JSON array of catalog.Benchmark sorted by name.
// Category names cannot start with "_" (category.schema.json), so it never
// clashes with a category; readers of the bucket must skip it.
const BenchmarksKey = "_benchmarks"

// Document names in problems of the catalog as stored and as sent.
const (
	defaultRegistryName   = catalog.RegistryFileName
	defaultCategoriesName = catalog.CategoriesFileName
)

// store is the three buckets the registry owns.
type store struct {
	models, categories, config jetstream.KeyValue
}

func openStore(ctx context.Context, js jetstream.JetStream) (*store, error) {
	var st store
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bus.ModelsBucket, &st.models}, {bus.CategoriesBucket, &st.categories}, {bus.ConfigBucket, &st.config}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("%w: bucket %s: %w", ErrUnavailable, b.name, err)
		}
		*b.kv = kv
	}
	return &st, nil
}

// entry is one stored value with its revision; rev 0 means absent.
type entry struct {
	value []byte
	rev   uint64
}

// snapshot is what the catalog buckets hold, with every key's revision.
type snapshot struct {
	models     map[string]entry
	categories map[string]entry // category keys only, BenchmarksKey apart
	benchmarks entry
}

func (s *snapshot) empty() bool {
	return len(s.models) == 0 && len(s.categories) == 0 && s.benchmarks.rev == 0
}

// readBucket returns the live keys of a bucket: one ordered consumer that
// delivers the last value per key, which is one pass however many keys.
func readBucket(ctx context.Context, kv jetstream.KeyValue) (map[string]entry, error) {
	fail := func(err error) (map[string]entry, error) {
		return nil, fmt.Errorf("%w: reading bucket %s: %w", ErrUnavailable, kv.Bucket(), err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fail(err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]entry{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fail(errors.New("watcher closed"))
			}
			if e == nil { // every current value delivered
				return out, nil
			}
			out[e.Key()] = entry{value: e.Value(), rev: e.Revision()}
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

func (st *store) readCatalog(ctx context.Context) (*snapshot, error) {
	models, err := readBucket(ctx, st.models)
	if err != nil {
		return nil, err
	}
	cats, err := readBucket(ctx, st.categories)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{models: models, categories: cats, benchmarks: cats[BenchmarksKey]}
	delete(cats, BenchmarksKey)
	return snap, nil
}

// readKey returns a key's value; an absent key gives entry{} and no error.
func readKey(ctx context.Context, kv jetstream.KeyValue, key string) (entry, error) {
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return entry{}, nil
	case errors.Is(err, jetstream.ErrInvalidKey):
		return entry{}, fmt.Errorf("%w: %q is not a valid key", ErrBadRequest, key)
	case err != nil:
		return entry{}, fmt.Errorf("%w: reading %s/%s: %w", ErrUnavailable, kv.Bucket(), key, err)
	}
	return entry{value: e.Value(), rev: e.Revision()}, nil
}

// rawRegistry and rawCategories are the documents rebuilt from stored values,
// so that catalog.Parse checks them like files.
type rawRegistry struct {
	Version int               `json:"version"`
	Models  []json.RawMessage `json:"models"`
}

type rawCategories struct {
	Version    int               `json:"version"`
	Benchmarks json.RawMessage   `json:"benchmarks"`
	Categories []json.RawMessage `json:"categories"`
}

// catalog validates what the buckets hold: the values against their
// schemas and the catalog rules, and each key against the id or name of its
// value. It returns an error wrapping ErrStoredInvalid and a
// *catalog.ValidationError listing every problem.
func (s *snapshot) catalog() (*catalog.Catalog, error) {
	var probs []catalog.Problem
	bad := func(bucket, key, format string, args ...any) {
		probs = append(probs, catalog.Problem{File: bucket, Entry: fmt.Sprintf("key %q", key),
			Err: fmt.Errorf("%w: %s", ErrStoredInvalid, fmt.Sprintf(format, args...))})
	}
	// values lists the JSON values in key order, checking that each names its key.
	values := func(bucket string, m map[string]entry, idField string) []json.RawMessage {
		out := make([]json.RawMessage, 0, len(m))
		for _, key := range slices.Sorted(maps.Keys(m)) {
			v := m[key].value
			var id map[string]json.RawMessage
			if err := json.Unmarshal(v, &id); err != nil {
				bad(bucket, key, "value is not a JSON object: %v", err)
				continue
			}
			var name string
			if json.Unmarshal(id[idField], &name) == nil && name != key {
				bad(bucket, key, "holds %s %q", idField, name)
			}
			out = append(out, v)
		}
		return out
	}
	reg := rawRegistry{Version: catalog.FormatVersion, Models: values(bus.ModelsBucket, s.models, "id")}
	cats := rawCategories{Version: catalog.FormatVersion, Benchmarks: json.RawMessage("[]"),
		Categories: values(bus.CategoriesBucket, s.categories, "name")}
	if s.benchmarks.rev != 0 {
		if json.Valid(s.benchmarks.value) {
			cats.Benchmarks = s.benchmarks.value
		} else {
			bad(bus.CategoriesBucket, BenchmarksKey, "value is not JSON")
		}
	}
	regDoc, errR := json.Marshal(reg)
	catDoc, errC := json.Marshal(cats)
	if err := errors.Join(errR, errC); err != nil { // values were checked above: a bug if it happens
		return nil, fmt.Errorf("%w: %w", ErrStoredInvalid, err)
	}
	cat, err := catalog.Parse(defaultRegistryName, regDoc, defaultCategoriesName, catDoc)
	var verr *catalog.ValidationError
	if errors.As(err, &verr) {
		probs = append(probs, verr.Problems...)
	} else if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStoredInvalid, err)
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%w in buckets %s and %s (import a whole registry to repair): %w",
			ErrStoredInvalid, bus.ModelsBucket, bus.CategoriesBucket, &catalog.ValidationError{Problems: probs})
	}
	return cat, nil
}

// storedConfig decodes the stored selection config; ErrNotFound when absent.
func storedConfig(e entry) (selection.Config, error) {
	if e.rev == 0 {
		return selection.Config{}, fmt.Errorf("%w: no selection config under %s/%s", ErrNotFound, bus.ConfigBucket, bus.SelectionConfigKey)
	}
	cfg, err := parseConfig(e.value)
	if err != nil {
		return selection.Config{}, fmt.Errorf("%w: %s/%s (revision %d): %w", ErrStoredInvalid, bus.ConfigBucket, bus.SelectionConfigKey, e.rev, err)
	}
	return cfg, nil
}

// LoadCatalog reads the registry buckets into a validated catalog, and the
// selection config. Errors wrap ErrUnavailable when a bucket cannot be read,
// ErrStoredInvalid (with a *catalog.ValidationError listing every problem)
// when the stored data is not valid, ErrNotFound when no selection config is
// stored. The buckets are read one after the other, not atomically: a
// concurrent write may show in one and not yet in another.
func LoadCatalog(ctx context.Context, js jetstream.JetStream) (*catalog.Catalog, selection.Config, error) {
	st, err := openStore(ctx, js)
	if err != nil {
		return nil, selection.Config{}, err
	}
	snap, err := st.readCatalog(ctx)
	if err != nil {
		return nil, selection.Config{}, err
	}
	cat, err := snap.catalog()
	if err != nil {
		return nil, selection.Config{}, err
	}
	e, err := readKey(ctx, st.config, bus.SelectionConfigKey)
	if err != nil {
		return nil, selection.Config{}, err
	}
	cfg, err := storedConfig(e)
	if err != nil {
		return nil, selection.Config{}, err
	}
	return cat, cfg, nil
}

// op is one key write of a plan: value nil deletes the key. rev is the
// revision the plan was made from (0: absent), so that a key changed since
// is a conflict rather than lost.
type op struct {
	kv    jetstream.KeyValue
	key   string
	value []byte
	rev   uint64
	// again: the key was written by an earlier op of the same apply, and
	// this op expects the revision that write made (rev is ignored).
	again bool
}

func (o op) String() string { return o.kv.Bucket() + "/" + o.key }

// setOp writes value unless the key already holds exactly that; ok is
// false when there is nothing to do, so that a repeated write is a no-op.
func setOp(kv jetstream.KeyValue, key string, cur entry, value []byte) (op, bool) {
	if cur.rev != 0 && string(cur.value) == string(value) {
		return op{}, false
	}
	return op{kv: kv, key: key, value: value, rev: cur.rev}, true
}

// errConflict marks a revision conflict; write retries on it.
var errConflict = errors.New("revision conflict")

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// apply writes the ops in order, each only if its key is still at the
// revision read, and returns each op's new revision (0 for a delete).
func apply(ctx context.Context, ops []op) ([]uint64, error) {
	revs := make([]uint64, len(ops))
	madeRev := map[string]uint64{}
	for i, o := range ops {
		if o.again {
			o.rev = madeRev[o.String()]
		}
		var err error
		switch {
		case o.value == nil:
			err = o.kv.Delete(ctx, o.key, jetstream.LastRevision(o.rev))
		case o.rev == 0:
			revs[i], err = o.kv.Create(ctx, o.key, o.value)
		default:
			revs[i], err = o.kv.Update(ctx, o.key, o.value, o.rev)
		}
		if err == nil {
			madeRev[o.String()] = revs[i]
			continue
		}
		written := make([]string, i)
		for j := range i {
			written[j] = "written: " + ops[j].String()
		}
		switch {
		case isConflict(err):
			err = fmt.Errorf("%w: %s changed since it was read: %w", errConflict, o, err)
		case errors.Is(err, jetstream.ErrInvalidKey):
			err = fmt.Errorf("%w: %q is not a valid key", ErrBadRequest, o.key)
		default:
			err = fmt.Errorf("%w: writing %s: %w", ErrUnavailable, o, err)
		}
		if i == 0 {
			return nil, err
		}
		return nil, &listError{
			err: fmt.Errorf("%w after %d of %d keys (the problems list them); retrying the same write converges: %w",
				ErrPartialWrite, i, len(ops), err),
			lines: written,
		}
	}
	return revs, nil
}

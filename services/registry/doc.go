// Package registry is the registry service of the model orchestrator: it
// owns the KV buckets orch_models (key: model id, value: catalog.Model
// JSON), orch_categories (key: category name, value: catalog.Category JSON;
// plus BenchmarksKey, a JSON array of catalog.Benchmark) and orch_config
// (key "selection", value: selection.Config JSON), and serves the nats.go
// micro service "registry" on orch.registry.*: list, get, put and delete of
// models and categories, benchmark weights, the selection config (get, put
// and patch) and import and export of whole MODEL_REGISTRY.json and
// task_categories.json documents. See api.go for the bodies.
//
// Every write is validated before anything is written: the body against its
// JSON Schema, and the catalog as stored with the change applied against the
// catalog rules. A refused write changes nothing and lists every problem.
// Writes are serialised within the process and guarded by KV revisions
// (Create, Update and Delete with the revision read), so that a key another
// registry replica changed in between is a conflict: the write starts over
// from a fresh read. Revisions guard the keys written, not the keys a write
// depends on, so two replicas writing related keys at once (a model put and
// the delete of its category) can still both pass; run one registry, or
// route writes to one.
//
// An import validates both documents completely first: a bad document
// changes nothing. It then writes the benchmarks and categories, then the
// models, then deletes the models and then the categories that the new
// documents lack, skipping keys that already hold their new value. A NATS
// failure in the middle is the one case that leaves a partial import (and,
// for watchers, a catalog between the old and the new): the error lists the
// keys written, and retrying the same import converges. Readers see each key
// change on its own, so a watcher may see such in-between states during any
// import.
//
// Metrics (WithMetrics): orch_registry_writes_total and
// orch_registry_rejections_total by write kind (and code), read from the
// counters of Stats; orch_registry_models and orch_registry_categories
// from watches of the buckets, so that every replica counts every write.
package registry

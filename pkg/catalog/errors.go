package catalog

import "errors"

// Sentinel errors. A *ValidationError unwraps to ErrInvalidCatalog and to each
// problem's sentinel, so errors.Is(err, ErrScoreOutOfRange) finds one problem
// among many.
var (
	// ErrInvalidCatalog: the registry and categories together are not valid;
	// the error is a *ValidationError listing every problem.
	ErrInvalidCatalog = errors.New("invalid catalog")
	// ErrSchema: a document does not match its JSON Schema (one problem per
	// violation) or is not JSON at all.
	ErrSchema = errors.New("does not match the schema")
	// ErrDuplicateID: two models have the same id.
	ErrDuplicateID = errors.New("duplicate model id")
	// ErrDuplicateCategory: two categories have the same name.
	ErrDuplicateCategory = errors.New("duplicate category")
	// ErrDuplicateBenchmark: two benchmarks have the same name.
	ErrDuplicateBenchmark = errors.New("duplicate benchmark")
	// ErrUnknownCategory: a model lists a category that is not registered.
	ErrUnknownCategory = errors.New("unknown category")
	// ErrUnknownBenchmark: a category weighs (or explains) a benchmark that is
	// not declared or not weighted, or a model reports a score for an
	// undeclared benchmark.
	ErrUnknownBenchmark = errors.New("unknown benchmark")
	// ErrScoreOutOfRange: a benchmark score is not within 0..100.
	ErrScoreOutOfRange = errors.New("benchmark score out of range")
	// ErrInvalidMemory: a model's gpu_memory_mb is not positive.
	ErrInvalidMemory = errors.New("invalid gpu memory")
	// ErrInvalidWeight: a benchmark weight is outside MinWeight..MaxWeight.
	ErrInvalidWeight = errors.New("invalid benchmark weight")
	// ErrInvalidConfidence: a confidence override is outside (0,1] or names a
	// category the model does not list.
	ErrInvalidConfidence = errors.New("invalid confidence override")
	// ErrNoCategories: a model lists no orchestration category.
	ErrNoCategories = errors.New("model lists no category")
	// ErrEmptyCategory: a category weighs no benchmark.
	ErrEmptyCategory = errors.New("category weighs no benchmark")
	// ErrCategoryInUse: a category cannot be removed while models list it.
	ErrCategoryInUse = errors.New("category in use")
	// ErrNotFound: no model, category or benchmark of that name.
	ErrNotFound = errors.New("not found")
	// ErrReadFile: a registry or categories file cannot be read.
	ErrReadFile = errors.New("cannot read catalog file")
)

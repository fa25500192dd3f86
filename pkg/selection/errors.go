package selection

import "errors"

// Sentinel errors of the engine. Returned errors wrap one of these and say
// what was wrong; test with errors.Is.
var (
	// ErrInvalidConfig: a selection config field is out of range.
	ErrInvalidConfig = errors.New("invalid selection config")
	// ErrInvalidRequest: the request is malformed (empty category, bad mode, negative limit...).
	ErrInvalidRequest = errors.New("invalid selection request")
	// ErrUnknownCategory: no category of that name is registered.
	ErrUnknownCategory = errors.New("unknown task category")
	// ErrUnknownModel: allow_models names a model that is not registered.
	ErrUnknownModel = errors.New("unknown model")
	// ErrNoCandidate: every candidate was filtered out; the error counts why.
	ErrNoCandidate = errors.New("no candidate satisfies the constraints")
)

// ErrFleetMismatch: the fleet was compiled by an engine with other placement
// settings; compile it again with this engine's NewFleet.
var ErrFleetMismatch = errors.New("fleet was compiled for another selection config")

package registry

import "errors"

// Sentinel errors. Each request error wraps one of the first six, which pick
// its micro error code (see codeOf).
var (
	// ErrBadRequest (400): the body is not JSON, or breaks its JSON Schema.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound (404): no model or category of that id or name, or no
	// selection config stored.
	ErrNotFound = errors.New("not found")
	// ErrRefused (422): valid JSON that breaks the catalog or config rules
	// (unknown category, category in use, ...).
	ErrRefused = errors.New("refused")
	// ErrUnavailable (503): the buckets cannot be read or written.
	ErrUnavailable = errors.New("registry buckets unavailable")
	// ErrConflict (503): other writers kept changing the keys this write
	// depends on; nothing of it was written, and it can be retried.
	ErrConflict = errors.New("concurrent write conflict")
	// ErrPartialWrite (503): a NATS failure interrupted a multi-key write
	// (an import) after some keys were written; the error lists them, and
	// retrying the same import converges.
	ErrPartialWrite = errors.New("write interrupted")

	// ErrBadKey: a model id the schema admits cannot be a KV key (a 422
	// problem).
	ErrBadKey = errors.New("not usable as a bucket key")

	// ErrStoredInvalid: what the buckets hold is not a valid catalog or
	// config (e.g. after an interrupted import); import a whole registry to
	// repair it.
	ErrStoredInvalid = errors.New("stored data is invalid")
	// ErrNotEmpty: seeding found data in the buckets and left them alone.
	ErrNotEmpty = errors.New("buckets already hold a catalog")
	// ErrConfig: the service configuration or a seed file is unusable.
	ErrConfig = errors.New("bad registry config")
	// ErrNotReady: the service does not serve requests yet (Check).
	ErrNotReady = errors.New("registry not ready")
	// ErrRunning: Run was called on a service that has already run.
	ErrRunning = errors.New("registry service already ran")
)

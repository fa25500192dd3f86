package selector

import "errors"

// Sentinel errors of the selector service.
var (
	// ErrConfig: the service configuration is unusable.
	ErrConfig = errors.New("invalid selector config")
	// ErrWarmup: the registry or telemetry could not be read at start.
	ErrWarmup = errors.New("selector warm-up failed")
	// ErrNotReady: no valid registry snapshot is loaded yet.
	ErrNotReady = errors.New("selector is not ready")
	// ErrRequestTooLarge: the request body exceeds MaxRequestBytes.
	ErrRequestTooLarge = errors.New("selection request too large")
	// ErrMalformedRequest: the request body is not a selection-request.
	ErrMalformedRequest = errors.New("malformed selection request")
	// ErrBadSample: a GPU sample was refused (not used for placement).
	ErrBadSample = errors.New("GPU sample refused")
	// errBatchCut: a decision event batch's final acknowledgement counts
	// fewer events than were sent in it; the rest are sent again.
	errBatchCut = errors.New("decision event batch cut short")
)

package cli

import "errors"

// Sentinel errors of the command line.
var (
	// ErrUsage: the command line is wrong (flags, arguments, settings).
	ErrUsage = errors.New("usage")
	// ErrNoService: nothing serves the subject asked.
	ErrNoService = errors.New("no service answers")
	// ErrTimeout: the service did not answer in time.
	ErrTimeout = errors.New("no reply in time")
	// ErrOutcomeUnknown: a change got no reply in time; it may have been
	// applied (exit status 3).
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrTooLarge: a request is larger than the NATS server takes.
	ErrTooLarge = errors.New("request too large")
	// ErrBadReply: a reply could not be read.
	ErrBadReply = errors.New("unreadable reply")
	// ErrFile: an input file cannot be read or is not JSON.
	ErrFile = errors.New("bad input file")
	// ErrOutput: an output file or directory cannot be written.
	ErrOutput = errors.New("cannot write output")
	// ErrCatalog: the current catalog or config cannot be loaded.
	ErrCatalog = errors.New("cannot load the current registry")
)

package allinone

import "errors"

// Sentinel errors of the composition.
var (
	// ErrConfig: the composition's settings cannot work.
	ErrConfig = errors.New("serve: bad config")
	// ErrPortInUse: the embedded server's port is taken.
	ErrPortInUse = errors.New("serve: NATS port in use")
	// ErrDataDirInUse: another serve runs on the same data directory.
	ErrDataDirInUse = errors.New("serve: data directory in use")
	// ErrStart: the system could not be brought up.
	ErrStart = errors.New("serve: start failed")
	// ErrServiceStopped: a service stopped while nobody asked it to.
	ErrServiceStopped = errors.New("serve: service stopped unexpectedly")
	// ErrShutdown: the ordered stop did not finish in time.
	ErrShutdown = errors.New("serve: shutdown incomplete")
)

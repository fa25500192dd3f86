package bus

import "errors"

// Sentinel errors of the bus package; callers test them with errors.Is.
var (
	// ErrConnConfig: the NATS connection settings are inconsistent or unreadable.
	ErrConnConfig = errors.New("bus: bad NATS connection config")
	// ErrConnect: no connection to the NATS server could be made.
	ErrConnect = errors.New("bus: cannot connect to NATS")
	// ErrDrain: a connection did not drain cleanly in time and was closed.
	ErrDrain = errors.New("bus: NATS drain incomplete")
	// ErrDisconnected: the connection is not up (reconnecting or closed).
	ErrDisconnected = errors.New("bus: not connected to NATS")
	// ErrProvision: a stream or bucket could not be created or updated.
	ErrProvision = errors.New("bus: cannot provision JetStream")
	// ErrEmbeddedServer: the in-process NATS server could not start.
	ErrEmbeddedServer = errors.New("bus: cannot start embedded NATS server")
	// ErrPanic: a request handler panicked (a bug); Guard logged its stack.
	// Services answer it 500.
	ErrPanic = errors.New("bus: request handler panicked")
)

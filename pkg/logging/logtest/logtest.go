// Package logtest collects service logs in tests.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer for loggers that several goroutines write to at
// once; String returns everything written so far.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Package logtest collects what services and commands write, in tests.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer (a logger's, a command's output) that goroutines may
// write to while the test reads it; String returns everything written so far.
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

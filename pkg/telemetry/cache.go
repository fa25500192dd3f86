package telemetry

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Age is how old the sample is at now (0 if it claims to be from the future).
func (s *Sample) Age(now time.Time) time.Duration {
	return max(0, now.Sub(s.Timestamp))
}

// Stale reports whether the sample is older than staleAfter at now.
func (s *Sample) Stale(now time.Time, staleAfter time.Duration) bool {
	return s.Age(now) > staleAfter
}

// Cache keeps the latest sample of every GPU. It is safe for concurrent use.
type Cache struct {
	mu      sync.RWMutex
	latest  map[string]Sample
	version uint64
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{latest: make(map[string]Sample)} }

// Put stores s unless the cache already holds a newer sample of that GPU
// (samples can arrive out of order from the stream and the live subject).
// It reports whether s was stored.
func (c *Cache) Put(s Sample) bool {
	key := s.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.latest[key]; ok && !s.Timestamp.After(old.Timestamp) {
		return false
	}
	c.latest[key] = s
	c.version++
	return true
}

// Get returns the latest sample of a GPU key ("<host>/<index>").
func (c *Cache) Get(key string) (Sample, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.latest[key]
	return s, ok
}

// Samples returns a copy of every latest sample, ordered by key, and the
// cache version they reflect.
func (c *Cache) Samples() ([]Sample, uint64) {
	c.mu.RLock()
	out := make([]Sample, 0, len(c.latest))
	for _, s := range c.latest {
		out = append(out, s)
	}
	v := c.version
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Sample) int { return strings.Compare(a.Key(), b.Key()) })
	return out, v
}

// Version increases on every stored sample; equal versions mean equal contents.
func (c *Cache) Version() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// Len is the number of GPUs known.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.latest)
}

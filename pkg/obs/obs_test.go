package obs

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServer(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "test_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Add(3)
	s := NewServer("127.0.0.1:0", reg)
	ready := errors.New("still warming")
	s.AddCheck("selector", func() error { return ready })
	s.AddCheck("sink", func() error { return nil })
	s.Handle("GET /page", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") }))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	base := "http://" + s.Addr()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		code       int
		contains   string
		before     func()
	}{
		{"metrics", "/metrics", 200, "orch_test_things_total 3", nil},
		{"runtime metrics", "/metrics", 200, "go_goroutines", nil},
		{"alive", "/healthz", 200, `"ok"`, nil},
		{"not ready names the check", "/readyz", 503, `"selector":"still warming"`, nil},
		{"ready", "/readyz", 200, `"selector":"ok"`, func() { ready = nil }},
		{"extra handler", "/page", 200, "hello", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			code, body := get(tt.path)
			if code != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.code, tt.contains)
			}
		})
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestListenError(t *testing.T) {
	s := NewServer("256.0.0.1:1", NewRegistry())
	if err := s.Listen(); !errors.Is(err, ErrListen) {
		t.Fatalf("err = %v, want ErrListen", err)
	}
}

// Package obs serves what operators scrape and probe: /metrics (Prometheus),
// /healthz (the process is alive) and /readyz (every readiness check passes).
// One Server per process: the all-in-one binary mounts every service's
// metrics, checks and pages on the same one.
package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric of the orchestrator.
const Namespace = "orch"

// ErrListen: the HTTP address could not be bound.
var ErrListen = errors.New("cannot serve metrics and health")

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check reports why a component is not ready, or nil.
type Check func() error

// Server is the HTTP side of a process.
type Server struct {
	addr     string
	reg      *prometheus.Registry
	mux      *http.ServeMux
	mu       sync.Mutex
	checks   map[string]Check
	listener net.Listener
}

// NewServer serves reg's metrics and the health endpoints on addr
// (e.g. ":9090"; ":0" picks a free port, see Addr).
func NewServer(addr string, reg *prometheus.Registry) *Server {
	s := &Server{addr: addr, reg: reg, mux: http.NewServeMux(), checks: map[string]Check{}}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// Registry is where the process's collectors register.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handle mounts an extra handler (a dashboard page, an API).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddCheck adds a readiness check under a name shown by /readyz.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := make(map[string]Check, len(s.checks))
	for n, c := range s.checks {
		checks[n] = c
	}
	s.mu.Unlock()
	slices.Sort(names)
	status, code := map[string]string{}, http.StatusOK
	for _, n := range names {
		if err := checks[n](); err != nil {
			status[n] = err.Error()
			code = http.StatusServiceUnavailable
		} else {
			status[n] = "ok"
		}
	}
	writeJSON(w, code, status)
}

// Listen binds the address; Run serves on it. Split so callers can print
// the bound address before serving.
func (s *Server) Listen() error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%w on %s: %w", ErrListen, s.addr, err)
	}
	s.listener = l
	return nil
}

// Addr is the bound address after Listen.
func (s *Server) Addr() string {
	if s.listener == nil {
		return s.addr
	}
	return s.listener.Addr().String()
}

// Run serves until ctx is done, then shuts down gracefully (5 s at most).
func (s *Server) Run(ctx context.Context) error {
	if s.listener == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	// A scrape, a probe or a dashboard read is short: idle keep-alive
	// connections and slow clients are let go rather than held forever.
	// WriteTimeout stays above the sink's request bound (30 s by default).
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, WriteTimeout: time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

package metricssink

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
)

// dashboardHTML is the whole page: markup, style and script, no asset from
// the network, so it works on an air-gapped cluster.
//
//go:embed dashboard/index.html
var dashboardHTML []byte

// dashboardCSP keeps the page to its own origin: a stray external asset
// fails in every browser instead of only offline.
const dashboardCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DashboardHandler serves the dashboard page at "/" and its JSON API (every
// path GET, errors as bus.ErrorBody with the HTTP status of the micro code):
//
//	/api/gpus                          GPUView: every GPU's latest sample, stale and unhealthy marked
//	/api/recent?limit=N                []Row, newest first (N in 1..MaxRecentLimit, default DefaultRecentLimit)
//	/api/series?window=15m&step=30s    Series of the window ending now (step whole seconds, window at most 31 days)
//	/api/reports                       []ReportInfo
//	/api/reports/{name}                ReportResult (404 for an unknown name)
//	/api/stats                         Stats
//
// Register mounts it on an obs.Server; a caller with its own mux mounts
// this handler on "GET /{$}" and "GET /api/".
func (s *Service) DashboardHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(dashboardHTML)
	})
	api := map[string]func(*http.Request) (any, error){
		"/api/gpus":           func(*http.Request) (any, error) { return s.GPUs(time.Now()), nil },
		"/api/recent":         s.apiRecent,
		"/api/series":         s.apiSeries,
		"/api/reports":        func(*http.Request) (any, error) { return Reports(), nil },
		"/api/reports/{name}": s.apiReport,
		"/api/stats":          func(*http.Request) (any, error) { return s.Stats(), nil },
	}
	for path, h := range api {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { s.serveAPI(w, r, h) })
	}
	// Any other API path answers like the others: a JSON error body.
	mux.HandleFunc("GET /api/", func(w http.ResponseWriter, r *http.Request) {
		s.serveAPI(w, r, func(r *http.Request) (any, error) {
			return nil, fmt.Errorf("%w: %s (see /api/reports for the report names)", ErrUnknownPath, r.URL.Path)
		})
	})
	return mux
}

// Register mounts the dashboard on srv ("/" and "/api/") and adds the
// sink's readiness check to its /readyz. The metrics go to srv.Registry()
// through WithMetrics, given to New.
func (s *Service) Register(srv *obs.Server) {
	h := s.DashboardHandler()
	srv.Handle("GET /{$}", h)
	srv.Handle("GET /api/", h)
	srv.AddCheck(ServiceName, s.Check)
}

// serveAPI answers one API request as JSON within the request timeout.
func (s *Service) serveAPI(w http.ResponseWriter, r *http.Request, h func(*http.Request) (any, error)) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	res, err := h(r.WithContext(ctx))
	var body []byte
	if err == nil {
		if body, err = json.Marshal(res); err != nil {
			err = fmt.Errorf("%w: %s: %w", ErrEncodeReply, r.URL.Path, err)
		}
	}
	status := http.StatusOK
	if err != nil {
		code := codeOf(err)
		status, _ = strconv.Atoi(code) // the codes are HTTP statuses
		ev := s.log.Debug()
		if status >= http.StatusInternalServerError {
			ev = s.log.Error()
		}
		ev.Err(err).Str("path", r.URL.Path).Int("status", status).Msg("dashboard API request failed")
		body, _ = json.Marshal(bus.ErrorBody{Error: publicMessage(err, code)}) // a struct of one string always encodes
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Service) apiRecent(r *http.Request) (any, error) {
	limit := DefaultRecentLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: limit %q is not a number", ErrBadRequest, r.URL.Path, v)
		}
		limit = n
	}
	return s.recentRows(r.Context(), r.URL.Path, limit)
}

func (s *Service) apiSeries(r *http.Request) (any, error) {
	window, step := DefaultSeriesWindow, DefaultSeriesStep
	for _, p := range []struct {
		name string
		v    *time.Duration
	}{{"window", &window}, {"step", &step}} {
		if v := r.URL.Query().Get(p.name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s %q is not a duration (e.g. 15m, 30s)", ErrBadRequest, p.name, v)
			}
			*p.v = d
		}
	}
	q, err := SeriesEnding(time.Now(), window, step)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	res, err := s.store.Series(r.Context(), q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return res, nil
}

func (s *Service) apiReport(r *http.Request) (any, error) {
	return s.report(r.Context(), r.PathValue("name"))
}

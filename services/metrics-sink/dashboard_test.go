package metricssink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// Keys of the simulated fleet's two marked GPUs.
const (
	staleGPU     = "gpu-b/1"
	unhealthyGPU = "gpu-a/3"
)

// dashboardConfig is testConfig with a stale threshold no test outlives:
// the fresh GPUs stay fresh however slow the machine.
func dashboardConfig() Config {
	cfg := testConfig()
	cfg.StaleAfter = 10 * time.Minute
	return cfg
}

// simFleet is six GPUs on two hosts as gpu-telemetry's simulator would
// publish them at now: staleGPU last reported an hour ago, unhealthyGPU
// reports an Xid error.
func simFleet(now time.Time) []telemetry.Sample {
	var out []telemetry.Sample
	for i, key := range []struct {
		host  string
		index int
	}{{"gpu-a", 0}, {"gpu-a", 1}, {"gpu-a", 2}, {"gpu-a", 3}, {"gpu-b", 0}, {"gpu-b", 1}} {
		total := int64(81920)
		used := int64(8000 + i*12000)
		s := telemetry.Sample{
			Host: key.host, Index: key.index, UUID: fmt.Sprintf("GPU-%08x", 0x5eed0000+i), Name: "NVIDIA H100 80GB HBM3",
			Timestamp: now, Source: "simulated", MemoryTotalMB: total, MemoryUsedMB: used, MemoryFreeMB: total - used,
			UtilizationGPUPct: float64(12 + i*16), UtilizationMemoryPct: float64(5 + i*10),
			TemperatureC: float64(41 + i*8), PowerW: float64(90 + i*55), PowerLimitW: 700, Healthy: true,
		}
		switch s.Key() {
		case staleGPU:
			s.Timestamp = now.Add(-time.Hour)
		case unhealthyGPU:
			s.Healthy, s.HealthReason, s.LastXid = false, "Xid 79: GPU has fallen off the bus", 79
		}
		out = append(out, s)
	}
	return out
}

// publishSamples publishes samples on their telemetry subjects as an agent does.
func publishSamples(t *testing.T, nc *nats.Conn, samples []telemetry.Sample) {
	t.Helper()
	for _, s := range samples {
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(bus.TelemetrySubject(s.Host, s.Index), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// liveEvents are n events of the last n seconds before now, so they fall in
// the dashboard's window, with ids unique to prefix.
func liveEvents(now time.Time, prefix string, n int) []events.SelectionEvent {
	evs := makeEvents(0, n)
	for i := range evs {
		evs[i].EventID = fmt.Sprintf("%s-%03d", prefix, i)
		evs[i].Timestamp = now.Add(-time.Duration(n-i) * time.Second)
	}
	return evs
}

// waitGPUs waits until the sink knows n GPUs.
func waitGPUs(t *testing.T, svc *Service, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d GPUs", n), func() bool { return len(svc.GPUs(time.Now()).GPUs) == n })
}

// get requests base+path and returns the status, headers and body.
func get(t *testing.T, base, method, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func decodeAs[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, body)
	}
	return v
}

func TestDashboardAPI(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	now := time.Now()
	publishSamples(t, nc, simFleet(now))
	const n = 30
	evs := liveEvents(now, "api", n)
	publish(t, js, evs)
	r := start(t, dashboardConfig(), js, st)
	ingest(t, st, r, n)
	waitGPUs(t, r.svc, 6)
	srv := httptest.NewServer(r.svc.DashboardHandler())
	t.Cleanup(srv.Close)

	wantReport, err := st.Report(testCtx(t), ReportModelsPerCategory)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path string
		status             int
		check              func(t *testing.T, h http.Header, body []byte)
	}{
		{"page", "GET", "/", 200, func(t *testing.T, h http.Header, body []byte) {
			if !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Fatalf("headers %v", h)
			}
			for _, id := range []string{`id="gpus"`, `id="chart-models"`, `id="chart-categories"`, `id="chart-latency"`, `id="recent"`, `id="reports"`} {
				if !strings.Contains(string(body), id) {
					t.Errorf("page lacks %s", id)
				}
			}
		}},
		{"gpus", "GET", "/api/gpus", 200, func(t *testing.T, _ http.Header, body []byte) {
			v := decodeAs[GPUView](t, body)
			var keys, stale, sick []string
			for _, g := range v.GPUs {
				keys = append(keys, g.Key)
				if g.Stale {
					stale = append(stale, g.Key)
				}
				if !g.Healthy {
					sick = append(sick, g.Key)
				}
				if g.Key != g.Host+"/"+fmt.Sprint(g.Index) || g.MemoryTotalMB != 81920 || g.UUID == "" {
					t.Errorf("GPU %s: %+v", g.Key, g)
				}
			}
			want := []string{"gpu-a/0", "gpu-a/1", "gpu-a/2", "gpu-a/3", "gpu-b/0", "gpu-b/1"}
			if !slices.Equal(keys, want) || !slices.Equal(stale, []string{staleGPU}) || !slices.Equal(sick, []string{unhealthyGPU}) {
				t.Fatalf("GPUs %v, stale %v, unhealthy %v", keys, stale, sick)
			}
			if v.Telemetry != TelemetryLive || v.Error != "" || v.StaleAfterMs != 600000 {
				t.Fatalf("telemetry %q (%q), stale after %v ms", v.Telemetry, v.Error, v.StaleAfterMs)
			}
		}},
		{"recent", "GET", "/api/recent?limit=3", 200, func(t *testing.T, _ http.Header, body []byte) {
			rows := decodeAs[[]Row](t, body)
			var ids []string
			for _, row := range rows {
				ids = append(ids, row.EventID)
			}
			if want := []string{evs[n-1].EventID, evs[n-2].EventID, evs[n-3].EventID}; !slices.Equal(ids, want) {
				t.Fatalf("recent %v, want %v", ids, want)
			}
			if rows[0].Event.Scores != evs[n-1].Scores || rows[0].Reason != evs[n-1].Reason {
				t.Fatalf("row scores %+v reason %q, want %+v %q", rows[0].Event.Scores, rows[0].Reason, evs[n-1].Scores, evs[n-1].Reason)
			}
		}},
		{"recent, default limit", "GET", "/api/recent", 200, func(t *testing.T, _ http.Header, body []byte) {
			if rows := decodeAs[[]Row](t, body); len(rows) != DefaultRecentLimit {
				t.Fatalf("%d rows, want %d", len(rows), DefaultRecentLimit)
			}
		}},
		{"recent, limit 0", "GET", "/api/recent?limit=0", 400, errorBody("outside 1..1000")},
		{"recent, limit not a number", "GET", "/api/recent?limit=ten", 400, errorBody("not a number")},
		{"series", "GET", "/api/series?window=5m&step=10s", 200, func(t *testing.T, _ http.Header, body []byte) {
			s := decodeAs[Series](t, body)
			var total int64
			for _, v := range s.Total {
				total += v
			}
			var models int64
			for _, l := range s.Models {
				models += l.Total
			}
			if len(s.Times) != 30 || s.StepSeconds != 10 || total != n || models != n || len(s.Categories) != 3 {
				t.Fatalf("series: %d buckets of %d s, %d decisions (models %d), categories %+v", len(s.Times), s.StepSeconds, total, models, s.Categories)
			}
			var p50s int
			for i, p := range s.P50Ms {
				if (p != nil) != (s.Total[i] > 0) {
					t.Errorf("bucket %d: p50 %v with %d decisions", i, deref64(p), s.Total[i])
				}
				if p != nil {
					p50s++
				}
			}
			if p50s == 0 {
				t.Error("no latency point")
			}
		}},
		{"series, default window", "GET", "/api/series", 200, func(t *testing.T, _ http.Header, body []byte) {
			if s := decodeAs[Series](t, body); len(s.Times) != 30 || s.StepSeconds != 30 {
				t.Fatalf("default series: %d buckets of %d s, want 30 of 30 s", len(s.Times), s.StepSeconds)
			}
		}},
		{"series, step longer than the window", "GET", "/api/series?window=1s&step=1m", 400, errorBody("at least one step")},
		{"series, bad duration", "GET", "/api/series?step=soon", 400, errorBody(`step "soon" is not a duration`)},
		{"series, too many buckets", "GET", "/api/series?window=48h&step=1s", 400, errorBody("limit 1440")},
		{"reports", "GET", "/api/reports", 200, func(t *testing.T, _ http.Header, body []byte) {
			var names []string
			for _, r := range decodeAs[[]ReportInfo](t, body) {
				names = append(names, r.Name)
			}
			if want := []string{ReportModelsPerCategory, ReportMultiCategoryEffectiveness, ReportPerformanceByCategory}; !slices.Equal(names, want) {
				t.Fatalf("reports %v, want %v", names, want)
			}
		}},
		{"report", "GET", "/api/reports/" + ReportModelsPerCategory, 200, func(t *testing.T, _ http.Header, body []byte) {
			res := decodeAs[ReportResult](t, body)
			if !slices.Equal(res.Columns, wantReport.Columns) {
				t.Fatalf("columns %v, want %v", res.Columns, wantReport.Columns)
			}
			sameTable(t, res.Name, res.Rows, viaJSON(t, wantReport.Rows))
		}},
		{"unknown report", "GET", "/api/reports/nope", 404, errorBody(`unknown report "nope"`)},
		{"stats", "GET", "/api/stats", 200, func(t *testing.T, _ http.Header, body []byte) {
			if s := decodeAs[Stats](t, body); s.Inserted != n {
				t.Fatalf("stats %+v, want %d inserted", s, n)
			}
		}},
		{"not an API", "GET", "/api/nothing", 404, nil},
		{"wrong method", "POST", "/api/stats", 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := get(t, srv.URL, tt.method, tt.path)
			if status != tt.status {
				t.Fatalf("%s %s: status %d, want %d\n%s", tt.method, tt.path, status, tt.status, body)
			}
			if tt.check != nil {
				tt.check(t, h, body)
			}
		})
	}
}

// errorBody checks a JSON error reply that says want.
func errorBody(want string) func(t *testing.T, h http.Header, body []byte) {
	return func(t *testing.T, h http.Header, body []byte) {
		t.Helper()
		eb := decodeAs[bus.ErrorBody](t, body)
		if h.Get("Content-Type") != "application/json" || !strings.Contains(eb.Error, want) {
			t.Fatalf("error %q (%s), want one saying %q", eb.Error, h.Get("Content-Type"), want)
		}
	}
}

// TestDashboardPageIsOffline: the page names no URL it could fetch; the
// only "http" in it is the SVG namespace, which is a name, not a request.
func TestDashboardPageIsOffline(t *testing.T) {
	page := string(dashboardHTML)
	for _, m := range regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*`).FindAllString(page, -1) {
		if m != "http://www.w3.org/2000/svg" {
			t.Errorf("the page refers to %s", m)
		}
	}
	// The favicon is an empty data: URL, so the browser asks for no file.
	page = strings.Replace(page, `<link rel="icon" href="data:,">`, "", 1)
	for _, tag := range []string{"<link", "<img", "@import", "url(", "src="} {
		if strings.Contains(page, tag) {
			t.Errorf("the page loads something: %s", tag)
		}
	}
}

// TestDashboardDatabaseDown: reads that need the database answer 503 naming
// the kind of failure, not its detail (which stays in the log); the GPU
// view and the stats, which do not need the database, still answer; an
// unknown API path is a JSON 404 like the others.
func TestDashboardDatabaseDown(t *testing.T) {
	_, nc := natstest.Start(t)
	st, _ := sqliteStore(t)
	r := start(t, dashboardConfig(), natstest.JetStream(t, nc), downStore{st})
	srv := httptest.NewServer(r.svc.DashboardHandler())
	t.Cleanup(srv.Close)
	tests := []struct {
		path   string
		status int
	}{
		{"/api/recent", 503},
		{"/api/series", 503},
		{"/api/reports/" + ReportPerformanceByCategory, 503},
		{"/api/reports/nope", 404},
		{"/api/nope", 404},
		{"/api/reports/", 404},
		{"/api/gpus", 200},
		{"/api/stats", 200},
		{"/api/reports", 200},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, h, body := get(t, srv.URL, "GET", tt.path)
			if status != tt.status {
				t.Fatalf("status %d, want %d\n%s", status, tt.status, body)
			}
			switch status {
			case 503:
				errorBody(ErrUnavailable.Error())(t, h, body)
				if strings.Contains(string(body), errDown.Error()) {
					t.Fatalf("the body carries the database's own error: %s", body)
				}
			case 404:
				errorBody("")(t, h, body)
			}
		})
	}
}

// TestDashboardWithoutTelemetryStream: a sink that may not read the
// telemetry stream still stores decisions; its GPU view says why it is
// empty, and fills once the stream exists.
func TestDashboardWithoutTelemetryStream(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	if err := js.DeleteStream(testCtx(t), bus.TelemetryStream); err != nil {
		t.Fatal(err)
	}
	st, _ := sqliteStore(t)
	cfg := dashboardConfig()
	cfg.Provision = false
	r := start(t, cfg, js, st)
	waitFor(t, "the GPU view to say the stream is unavailable", func() bool {
		v := r.svc.GPUs(time.Now())
		return v.Telemetry == TelemetryUnavailable && strings.Contains(v.Error, ErrTelemetry.Error())
	})
	publish(t, js, liveEvents(time.Now(), "no-telemetry", 3))
	ingest(t, st, r, 3)

	if err := bus.Provision(testCtx(t), js); err != nil {
		t.Fatal(err)
	}
	// Samples published before the consumer exists are read from the stream.
	publishSamples(t, nc, simFleet(time.Now())[:1])
	waitGPUs(t, r.svc, 1)
	if v := r.svc.GPUs(time.Now()); v.Telemetry != TelemetryLive || v.Error != "" {
		t.Fatalf("after the stream appeared: telemetry %q (%q)", v.Telemetry, v.Error)
	}
}

// TestDashboardTelemetryUpdates: the view keeps each GPU's newest sample,
// whether it came from the stream's history or live.
func TestDashboardTelemetryUpdates(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	now := time.Now()
	old := simFleet(now.Add(-2 * time.Second))[:2]
	latest := simFleet(now)[:2]
	latest[0].UtilizationGPUPct = 99
	publishSamples(t, nc, old)
	publishSamples(t, nc, latest[:1]) // history: two samples of gpu-a/0
	r := start(t, dashboardConfig(), js, st)
	waitGPUs(t, r.svc, 2)
	waitFor(t, "gpu-a/0's newest sample", func() bool {
		return r.svc.GPUs(time.Now()).GPUs[0].UtilizationGPUPct == 99
	})
	latest[1].UtilizationGPUPct = 77
	publishSamples(t, nc, latest[1:]) // live
	waitFor(t, "gpu-a/1's live sample", func() bool {
		return r.svc.GPUs(time.Now()).GPUs[1].UtilizationGPUPct == 77
	})
	publishSamples(t, nc, old[:1]) // an older sample arriving late changes nothing
	// A marker sample after it: once it is seen, the late one was read too.
	marker := simFleet(now)[4]
	publishSamples(t, nc, []telemetry.Sample{marker})
	waitGPUs(t, r.svc, 3)
	if g := r.svc.GPUs(time.Now()).GPUs[0]; g.UtilizationGPUPct != 99 {
		t.Fatalf("gpu-a/0 went back to an older sample: %+v", g)
	}
}

// TestRegister: on an obs.Server the sink adds its readiness check, the
// dashboard and the API beside /metrics, which carries the sink's metrics.
func TestRegister(t *testing.T) {
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	httpd := obs.NewServer("127.0.0.1:0", obs.NewRegistry())
	svc, err := New(dashboardConfig(), js, st, WithMetrics(httpd.Registry()))
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(httpd)
	if err := httpd.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("obs server: %v", err)
		}
	})
	base := "http://" + httpd.Addr()
	status, _, body := get(t, base, "GET", "/readyz")
	if status != 503 || !strings.Contains(string(body), ErrNotReady.Error()) {
		t.Fatalf("/readyz before Run: %d %s", status, body)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, "/readyz to pass", func() bool {
		status, _, _ := get(t, base, "GET", "/readyz")
		return status == 200
	})
	publish(t, js, liveEvents(time.Now(), "reg", 4))
	// The counters follow the commit (and its acks): wait for them, not the rows.
	waitFor(t, "the rows counted", func() bool { return count(t, st) == 4 && svc.Stats().Inserted == 4 })
	tests := []struct {
		path, want string
	}{
		{"/", `id="chart-latency"`},
		{"/api/stats", `"inserted":4`},
		{"/metrics", "orch_sink_rows_inserted_total 4"},
		{"/metrics", "go_goroutines"},
		{"/healthz", "ok"},
		{"/readyz", `"metrics-sink":"ok"`},
	}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.want, func(t *testing.T) {
			status, _, body := get(t, base, "GET", tt.path)
			if status != 200 || !strings.Contains(string(body), tt.want) {
				t.Fatalf("%s: %d, want 200 with %q:\n%.2000s", tt.path, status, tt.want, body)
			}
		})
	}
}

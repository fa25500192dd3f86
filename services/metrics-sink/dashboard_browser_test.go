package metricssink

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/obs"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Environment of the browser test: CI installs chromium and sets
// envRequireChromium=1, so a missing browser fails there instead of
// skipping; envScreenshotDir keeps the screenshot (docs/ for the README).
const (
	envRequireChromium = "ORCH_REQUIRE_CHROMIUM"
	envScreenshotDir   = "ORCH_SCREENSHOT_DIR"
)

// chromiumPath finds Debian's chromium, or skips (fails under envRequireChromium).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv(envRequireChromium) == "1" {
		t.Fatalf("%s=1 but there is no /usr/bin/chromium nor chromium on PATH (apt-get install chromium)", envRequireChromium)
	}
	t.Skipf("browser test skipped: no /usr/bin/chromium nor chromium on PATH (apt-get install chromium; %s=1 makes this a failure)", envRequireChromium)
	return ""
}

// browserEvents are n plausible decisions over the last 14 minutes: five
// models, four categories, scores and latencies that vary, a few degraded.
func browserEvents(now time.Time, n int) []events.SelectionEvent {
	models := []string{"qwen2.5-coder-32b", "deepseek-math-7b", "llama-3.1-70b", "mistral-nemo-12b", "phi-4-14b"}
	cats := []string{"code", "math", "reasoning", "general"}
	fleet := simFleet(now)
	evs := make([]events.SelectionEvent, n)
	for i := range evs {
		ev := makeEvent(i)
		ev.EventID = fmt.Sprintf("seed-%03d", i)
		ev.Timestamp = now.Add(-14*time.Minute + time.Duration(i)*14*time.Minute/time.Duration(n))
		ev.SelectedModel = models[(i*7+i/5)%len(models)]
		ev.TaskCategory = cats[(i*3+i/7)%len(cats)]
		ev.Request.TaskCategory = ev.TaskCategory
		ev.PrimaryCategory = i%3 != 1
		ev.SelectionDurationMs = 0.04 + 0.03*float64((i*13)%17)/17
		if i%23 == 11 {
			ev.SelectionDurationMs = 0.31 // a slow decision: p99 leaves p50
		}
		ev.Scores = selection.Scores{
			Quality:     0.62 + 0.33*float64((i*11)%13)/13,
			Confidence:  []float64{0.95, 0.9, 0.7}[i%3],
			Utilization: 0.35 + 0.6*float64((i*5)%11)/11,
			Headroom:    0.4 + 0.55*float64((i*3)%7)/7,
			Temperature: 0.6 + 0.4*float64((i*2)%5)/5,
		}
		ev.Scores.Placement = (ev.Scores.Utilization + ev.Scores.Headroom + ev.Scores.Temperature) / 3
		ev.Mode, ev.RequestedMode, ev.Degraded = selection.ModeGPUAware, selection.ModeGPUAware, false
		g := fleet[(i*5)%4] // the healthy, fresh GPUs of gpu-a and gpu-b/0
		if g.Key() == unhealthyGPU {
			g = fleet[4]
		}
		ev.Host, ev.GPUID, ev.GPUUUID, ev.TelemetryAgeMs = g.Host, intPtr(g.Index), g.UUID, 800
		ev.Reason = fmt.Sprintf("%s for %s: quality %.2f x confidence %.2f x placement %.2f on %s (%.0f%% busy, %d GB free)",
			ev.SelectedModel, ev.TaskCategory, ev.Scores.Quality, ev.Scores.Confidence, ev.Scores.Placement,
			g.Key(), g.UtilizationGPUPct, g.MemoryFreeMB/1024)
		if i%17 == 5 {
			ev.Mode, ev.Degraded, ev.GPUID, ev.Host, ev.GPUUUID, ev.TelemetryAgeMs = selection.ModeMultiCategory, true, nil, "", "", -1
			ev.Scores.Placement, ev.Scores.Utilization, ev.Scores.Headroom, ev.Scores.Temperature = 1, 1, 1, 1
			ev.Reason = fmt.Sprintf("%s for %s: quality %.2f x confidence %.2f; no fresh GPU telemetry, fell back to multi_category",
				ev.SelectedModel, ev.TaskCategory, ev.Scores.Quality, ev.Scores.Confidence)
		}
		ev.FinalScore = ev.Scores.Quality * ev.Scores.Confidence * ev.Scores.Placement
		evs[i] = ev
	}
	return evs
}

// browserLog collects what the page asked the network for and what it
// reported as an error, from the tab's event loop.
type browserLog struct {
	mu       sync.Mutex
	requests []string
	problems []string
}

func (l *browserLog) add(list *[]string, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*list = append(*list, s)
}

func (l *browserLog) snapshot() (requests, problems []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.requests), slices.Clone(l.problems)
}

// TestDashboardInBrowser drives the page in headless chromium against a
// real sink: six GPUs (one stale, one unhealthy) and the stored decisions
// show; a new decision appears without a reload; the charts are drawn; the
// seed's reports are tables; nothing is fetched from outside the sink.
func TestDashboardInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	_, nc := natstest.Start(t)
	js := natstest.JetStream(t, nc)
	st, _ := sqliteStore(t)
	now := time.Now()
	publishSamples(t, nc, simFleet(now))
	const n = 120
	publish(t, js, browserEvents(now, n))
	httpd := obs.NewServer("127.0.0.1:0", obs.NewRegistry())
	r := start(t, dashboardConfig(), js, st, WithMetrics(httpd.Registry()))
	r.svc.Register(httpd)
	if err := httpd.Listen(); err != nil {
		t.Fatal(err)
	}
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpd.Run(httpCtx) }()
	t.Cleanup(func() {
		stopHTTP()
		if err := <-served; err != nil {
			t.Errorf("HTTP server: %v", err)
		}
	})
	ingest(t, st, r, n)
	waitGPUs(t, r.svc, 6)
	base := "http://" + httpd.Addr()

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromium),
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.UserDataDir(t.TempDir()),
			chromedp.WindowSize(1440, 1000),
		)...)
	t.Cleanup(cancelAlloc)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelTab)
	// Bounds the whole browser session; an outcome bound, like waitFor's.
	ctx, cancel := context.WithTimeout(tabCtx, 2*time.Minute)
	t.Cleanup(cancel)

	var blog browserLog
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			blog.add(&blog.requests, e.Request.URL)
		}
	}); err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	console := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				blog.add(&blog.problems, m.String())
			}
		}
	}()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-loaded="true"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#gpus[data-count="6"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-event-id="seed-119"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table[data-report]`)),
	); err != nil {
		t.Fatalf("page did not load: %v", err)
	}

	evalList := func(expr string) []string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	keys := evalList(`[...document.querySelectorAll("#gpus [data-gpu]")].map(e => e.dataset.gpu)`)
	stale := evalList(`[...document.querySelectorAll('#gpus [data-stale="true"]')].map(e => e.dataset.gpu + " " + e.querySelector(".badge.stale").textContent)`)
	sick := evalList(`[...document.querySelectorAll('#gpus [data-healthy="false"]')].map(e => e.dataset.gpu + " " + e.querySelector(".badge.unhealthy").textContent)`)
	if want := []string{"gpu-a/0", "gpu-a/1", "gpu-a/2", "gpu-a/3", "gpu-b/0", "gpu-b/1"}; !slices.Equal(keys, want) {
		t.Errorf("GPU cards %v, want %v", keys, want)
	}
	if want := []string{staleGPU + " STALE"}; !slices.Equal(stale, want) {
		t.Errorf("stale GPUs %v, want %v", stale, want)
	}
	if want := []string{unhealthyGPU + " UNHEALTHY"}; !slices.Equal(sick, want) {
		t.Errorf("unhealthy GPUs %v, want %v", sick, want)
	}

	// The reports were read once every decision was stored: each table has
	// the rows the store's report has.
	var wantReports []string
	for _, info := range Reports() {
		res, err := st.Report(testCtx(t), info.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantReports = append(wantReports, fmt.Sprintf("%s %d %d", info.Name, len(res.Columns), len(res.Rows)))
	}
	reports := evalList(`[...document.querySelectorAll("table[data-report]")].map(t =>
		t.dataset.report + " " + t.tHead.rows[0].cells.length + " " + t.dataset.rows)`)
	if !slices.Equal(reports, wantReports) {
		t.Errorf("report tables (name, columns, rows) %v, want %v", reports, wantReports)
	}

	// A marker only this page load has: a reload would lose it.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.__sameLoad = "yes"`)); err != nil {
		t.Fatal(err)
	}
	fresh := browserEvents(time.Now(), 1)[0]
	fresh.EventID, fresh.Timestamp = "browser-live-1", time.Now()
	fresh.SelectedModel, fresh.Reason = "granite-3.1-8b", "granite-3.1-8b for code: published while the page was open"
	publish(t, js, []events.SelectionEvent{fresh})
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-event-id="browser-live-1"]`))); err != nil {
		t.Fatalf("the new decision never showed: %v", err)
	}
	row := evalList(`[...document.querySelector('tr[data-event-id="browser-live-1"]').cells].map(c => c.textContent.trim())`)
	if len(row) != 14 || !strings.HasPrefix(row[2], "granite-3.1-8b") || row[13] != fresh.Reason ||
		row[6] != fmt.Sprintf("%.3f", fresh.Scores.Quality) || row[8] != fmt.Sprintf("%.3f", fresh.Scores.Placement) {
		t.Errorf("new row %q: want the model, each scorer and the reason", row)
	}
	if same := evalList(`[String(window.__sameLoad)]`); !slices.Equal(same, []string{"yes"}) {
		t.Errorf("the page reloaded to show the new decision (marker %v)", same)
	}

	// Wait until the charts count the new decision too, then read them.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#legend-models [data-series="granite-3.1-8b"]`))); err != nil {
		t.Fatalf("the model chart never showed the new model: %v", err)
	}
	charts := evalList(`["models", "categories", "latency"].map(c => {
		const s = document.getElementById("chart-" + c);
		return c + " " + s.querySelectorAll("rect").length + " " + s.querySelectorAll("path").length + " " + s.querySelectorAll("circle").length;
	})`)
	var bars, paths, dots [3]int
	for i, c := range charts {
		var name string
		if _, err := fmt.Sscan(c, &name, &bars[i], &paths[i], &dots[i]); err != nil {
			t.Fatalf("chart %q: %v", c, err)
		}
	}
	if bars[0] == 0 || bars[1] == 0 || paths[2] != 2 || dots[2] == 0 {
		t.Errorf("charts (rects, paths, dots): %v; want bars per model and category, a p50 and a p99 line", charts)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv(envScreenshotDir)
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	cancel()
	<-consoleDone
	requests, problems := blog.snapshot()
	for _, u := range requests {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page fetched %s: only the sink's own origin is allowed", u)
		}
	}
	if len(requests) == 0 {
		t.Error("no request seen: the network log is not working")
	}
	for _, p := range problems {
		t.Errorf("page error: %s", p)
	}
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/services/orchestrator/internal/eventlog"
)

func (a *app) eventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Watch live decisions or replay recorded ones from the " + bus.SelectionStream + " stream",
		Args:  argsUsage(cobra.NoArgs),
	}
	cmd.AddCommand(a.eventsTailCmd(), a.eventsReplayCmd())
	return cmd
}

// noteUnknownCategory warns when --category names no category the registry
// holds (a typo would otherwise show nothing, or wait forever in tail). It
// stays quiet when the registry cannot be asked: the stream is what counts.
func (a *app) noteUnknownCategory(ctx context.Context, nc *nats.Conn, category string) {
	if category == "" {
		return
	}
	var cats []catalog.Category
	if err := a.request(ctx, nc, registrySubject("categories.list"), nil, &cats); err != nil {
		return
	}
	a.noteCategoryNotIn(category, cats)
}

// noteCategoryNotIn warns when --category is none of cats (see noteUnknownCategory).
func (a *app) noteCategoryNotIn(category string, cats []catalog.Category) {
	if category == "" {
		return
	}
	names := make([]string, len(cats))
	for i, c := range cats {
		if c.Name == category {
			return
		}
		names[i] = c.Name
	}
	fmt.Fprintf(a.stderr, "note: the registry has no category %q (it has %s); only events recorded under that name will show\n", category, strings.Join(names, ", "))
}

// eventPrinter writes events as table lines (header first) or JSON lines.
type eventPrinter struct {
	w      io.Writer
	errw   io.Writer
	json   bool
	header bool
}

func (p *eventPrinter) print(ev *events.SelectionEvent) error {
	if p.json {
		data, err := json.Marshal(ev)
		if err != nil { // e.g. a time whose offset Go decodes but cannot write back
			fmt.Fprintf(p.errw, "skipping event %s: it cannot be written as JSON: %v\n", ev.EventID, err)
			return nil
		}
		_, err = fmt.Fprintf(p.w, "%s\n", data)
		return err
	}
	const format = "%-24s  %-12s  %-40s  %-16s  %-14s  %6s  %8s  %s\n"
	if !p.header {
		p.header = true
		fmt.Fprintf(p.w, format, "TIME", "CATEGORY", "MODEL", "GPU", "MODE", "SCORE", "TOOK", "EVENT")
	}
	gpu := "-"
	if ev.GPUID != nil {
		gpu = fmt.Sprintf("%s/%d", ev.Host, *ev.GPUID)
	}
	mode := string(ev.Mode)
	if ev.Degraded {
		mode += "!"
	}
	_, err := fmt.Fprintf(p.w, format, ev.Timestamp.Local().Format("2006-01-02 15:04:05.000"), ev.TaskCategory,
		ev.SelectedModel, gpu, mode, fmt.Sprintf("%.4f", ev.FinalScore),
		fmtAge(time.Duration(ev.SelectionDurationMs*float64(time.Millisecond))), ev.EventID)
	return err
}

func (a *app) eventsTailCmd() *cobra.Command {
	var category string
	var count int
	cmd := &cobra.Command{
		Use:   "tail [--category C] [-n N]",
		Short: "Print decisions as they are made, until Ctrl-C (or N of them)",
		Long: `tail follows the decision stream from now on (an ordered consumer delivering
new events). A '!' after the mode marks a degraded decision (no fresh GPU
telemetry). --json prints each event as one JSON line.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 0 {
				return usage(cmd, "-n %d must not be negative", count)
			}
			ctx := cmd.Context()
			return a.withJetStream(ctx, "events tail", func(nc *nats.Conn, js jetstream.JetStream) error {
				a.noteUnknownCategory(ctx, nc, category)
				p := &eventPrinter{w: a.stdout, errw: a.stderr, json: a.json}
				seen := 0
				what := "every category"
				if category != "" {
					what = "category " + category
				}
				skipped, err := eventlog.Tail(ctx, js, category, func(r eventlog.Record) error {
					if err := p.print(&r.Event); err != nil {
						return err
					}
					seen++
					if count > 0 && seen >= count {
						return eventlog.ErrStop
					}
					return nil
				}, func() {
					fmt.Fprintf(a.stderr, "tailing %s (%s); Ctrl-C to stop\n", bus.SelectionStream, what)
				})
				if skipped > 0 {
					fmt.Fprintf(a.stderr, "%d undecodable event(s) skipped\n", skipped)
				}
				return err
			})
		},
	}
	cmd.Flags().StringVar(&category, "category", "", "only this task category")
	cmd.Flags().IntVarP(&count, "count", "n", 0, "stop after this many events (0: until Ctrl-C)")
	return cmd
}

// progressLine shows a status line on w: rewritten in place at most every
// 200ms on a terminal, otherwise a new line at most every second (logs).
type progressLine struct {
	mu       sync.Mutex
	w        io.Writer
	every    time.Duration
	last     time.Time
	terminal bool
}

func newProgress(w io.Writer) *progressLine {
	p := &progressLine{w: w, every: time.Second, terminal: isTerminal(w)}
	if p.terminal {
		p.every = 200 * time.Millisecond
	}
	return p
}

// update shows the line when the interval has passed (always when final).
func (p *progressLine) update(final bool, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !final && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	line := fmt.Sprintf(format, args...)
	switch {
	case p.terminal && final:
		fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	case p.terminal:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	default:
		fmt.Fprintln(p.w, line)
	}
}

// windowFlags are --since and --until.
type windowFlags struct{ since, until string }

func (f *windowFlags) add(cmd *cobra.Command, sinceHelp string) {
	cmd.Flags().StringVar(&f.since, "since", "", sinceHelp)
	cmd.Flags().StringVar(&f.until, "until", "", "end of the window: duration ago or RFC 3339 time (default: the last event stored now)")
}

func (f *windowFlags) window(cmd *cobra.Command) (eventlog.Window, error) {
	if f.since == "" {
		return eventlog.Window{}, usage(cmd, "--since is required (e.g. --since 1h or --since 2026-11-25T12:00:00Z)")
	}
	now := time.Now()
	var w eventlog.Window
	var err error
	if w.Since, err = eventlog.ParseTime(f.since, now); err != nil {
		return w, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--since: %w", err)}
	}
	if f.until != "" {
		if w.Until, err = eventlog.ParseTime(f.until, now); err != nil {
			return w, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--until: %w", err)}
		}
		if err := w.Check(); err != nil {
			return w, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: %w", ErrUsage, err)}
		}
	}
	if w.Since.After(now) {
		return w, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%w: %w: --since %s is in the future (now is %s)",
			ErrUsage, eventlog.ErrWindow, w.Since.Format(time.RFC3339), now.Format(time.RFC3339))}
	}
	return w, nil
}

func (a *app) eventsReplayCmd() *cobra.Command {
	var wf windowFlags
	var category string
	cmd := &cobra.Command{
		Use:   "replay --since D [--until D] [--category C]",
		Short: "Print the decisions recorded in a time window",
		Long: `replay reads the decision stream from --since (a duration before now, e.g.
1h, or an RFC 3339 time) to --until (default: the last event stored when it
starts), with a progress line on stderr. --json prints each event as one
JSON line, with the decision's inputs.`,
		Example: "  orchestrator events replay --since 1h\n  orchestrator events replay --since 2026-11-25T12:00:00Z --until 2026-11-25T13:00:00Z --json",
		Args:    argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := wf.window(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			return a.withJetStream(ctx, "events replay", func(nc *nats.Conn, js jetstream.JetStream) error {
				a.noteUnknownCategory(ctx, nc, category)
				p := &eventPrinter{w: a.stdout, errw: a.stderr, json: a.json}
				prog := newProgress(a.stderr)
				shown := 0
				st, err := eventlog.Replay(ctx, js, w, func(r eventlog.Record) error {
					if category != "" && r.Event.TaskCategory != category {
						return nil
					}
					shown++
					return p.print(&r.Event)
				}, func(scanned, total uint64) {
					prog.update(false, "read %d of %d messages", scanned, total)
				})
				prog.update(true, "replayed %d events (%d of %d messages), %d shown, %d undecodable", st.Delivered, st.Scanned, st.Total, shown, st.Undecodable)
				return err
			})
		},
	}
	wf.add(cmd, "start of the window: duration before now (e.g. 1h) or RFC 3339 time (required)")
	cmd.Flags().StringVar(&category, "category", "", "only this task category")
	return cmd
}

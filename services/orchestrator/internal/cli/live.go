package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/services/selector"
)

// statsQuiet ends the gathering of selector stats: every selector answers
// within it of the first (they answer from memory).
const statsQuiet = 150 * time.Millisecond

// selectorState is one running selector's answer to a micro stats request.
type selectorState struct {
	id    string
	stats selector.Stats
}

// selectorStates asks every running selector for its stats.
func selectorStates(nc *nats.Conn) ([]selectorState, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, "selector", "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	var out []selectorState
	for {
		msg, err := sub.NextMsg(statsQuiet)
		if err != nil { // quiet for statsQuiet: everyone answered
			return out, nil
		}
		var ms micro.Stats
		if json.Unmarshal(msg.Data, &ms) != nil || len(ms.Endpoints) == 0 {
			continue
		}
		var st selector.Stats
		if json.Unmarshal(ms.Endpoints[0].Data, &st) == nil {
			out = append(out, selectorState{id: ms.ID, stats: st})
		}
	}
}

// awaitSelectors follows a registry write: it waits until every running
// selector has rebuilt from the buckets' newest revisions, so that the next
// selection sees the write, and says on stderr how that went. It never
// fails the command (the write is stored either way); --timeout bounds it.
func (a *app) awaitSelectors(ctx context.Context, nc *nats.Conn, buckets ...string) {
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	want := map[string]uint64{}
	for _, b := range buckets {
		st, err := js.Stream(ctx, "KV_"+b)
		if err != nil {
			fmt.Fprintf(a.stderr, "note: cannot tell whether selectors applied it: %v\n", err)
			return
		}
		want[b] = st.CachedInfo().State.LastSeq
	}
	deadline := time.Now().Add(a.timeout)
	for {
		states, err := selectorStates(nc)
		if err != nil {
			fmt.Fprintf(a.stderr, "note: cannot tell whether selectors applied it: %v\n", err)
			return
		}
		if len(states) == 0 {
			fmt.Fprintln(a.stderr, "note: no selector is running; one applies it when it starts")
			return
		}
		var behind []string
		for _, s := range states {
			for b, rev := range want {
				if s.stats.AppliedRevisions[b] < rev {
					behind = append(behind, s.id)
					break
				}
			}
		}
		if len(behind) == 0 {
			fmt.Fprintf(a.stderr, "live on %d selector(s)\n", len(states))
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			slices.Sort(behind)
			fmt.Fprintf(a.stderr, "warning: %d of %d selector(s) have not applied it after %s (%s); their logs say why\n",
				len(behind), len(states), a.timeout, strings.Join(behind, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

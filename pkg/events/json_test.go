package events_test

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/events"
	"github.com/nlocalmodels/orchestrator/pkg/jsonw"
	"github.com/nlocalmodels/orchestrator/pkg/jsonw/jsonwtest"
)

// plainEvent has SelectionEvent's fields and tags but not its MarshalJSON:
// encoding/json encodes it by reflection, the reference.
type plainEvent events.SelectionEvent

func TestEventJSONIsEncodingJSONs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ev := jsonwtest.Make[events.SelectionEvent]().Draw(t, "event")
		jsonwtest.SameAsEncodingJSON(t, plainEvent(ev), func(w *jsonw.Writer) {
			var err error
			w.B, err = ev.AppendJSON(w.B)
			if err != nil {
				t.Fatal(err)
			}
		})
	})
}

package telemetry_test

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/jsonw/jsonwtest"
	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

func TestSampleJSONIsEncodingJSONs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := jsonwtest.Make[telemetry.Sample]().Draw(t, "sample")
		jsonwtest.SameAsEncodingJSON(t, s, s.WriteJSON)
	})
}

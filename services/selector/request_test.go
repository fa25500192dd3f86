package selector

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// decodeRequestReference is what decodeRequest stands in for:
// encoding/json, unknown fields refused, nothing after the object.
func decodeRequestReference(data []byte) (selection.Request, error) {
	var r selection.Request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return r, errors.New("text after the object")
	}
	return r, nil
}

// FuzzDecodeRequest holds decodeRequest to encoding/json's answers: the
// same requests refused, the same values from the rest, except that a key
// that matches a field only by Unicode case folding is refused (400), which
// needs a byte beyond ASCII. `go test` runs the seeds; `-fuzz
// FuzzDecodeRequest` searches further.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"task_category":"code"}`,
		`{"request_id":"nflow-1","task_category":"code","mode":"gpu_aware","constraints":{"max_gpu_memory_mb":16384,"allow_models":["a","b"],"min_score":0.5,"hosts":["h1"],"max_temperature_c":80}}`,
		` {"task_category":"math"} `,
		`{"task_category":"code","colour":"red"}`,
		`{"task_category":"code"} {}`,
		`{"Task_Category":"code"}`,
		`{"task_category":"co\u00e9de","constraints":{"min_score":"high"}}`,
		`null`,
		`{"taſk_category":"code"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeRequest(data)
		want, wantErr := decodeRequestReference(data)
		if (err == nil) != (wantErr == nil) {
			if err != nil && !isASCII(data) {
				return // encoding/json's Unicode folding took a key decodeRequest refuses
			}
			t.Fatalf("%q: error %v, encoding/json's %v", data, err, wantErr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("%q: error %v is not an ErrMalformedRequest", data, err)
			}
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded %+v, encoding/json %+v", data, got, want)
		}
	})
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Package jsonwtest checks hand-written JSON writers against encoding/json.
package jsonwtest

import (
	"encoding/json"
	"reflect"
	"time"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/jsonw"
)

// Make generates arbitrary values of T, as rapid.Make does, with times that
// JSON can carry (years 0-9999, any zone offset).
func Make[T any]() *rapid.Generator[T] {
	return rapid.MakeCustom[T](rapid.MakeConfig{Types: map[reflect.Type]*rapid.Generator[any]{
		reflect.TypeFor[time.Time](): Time().AsAny(),
	}})
}

// Time generates times between years 0 and 9999 in UTC or a fixed offset.
func Time() *rapid.Generator[time.Time] {
	lo := time.Date(0, 1, 2, 0, 0, 0, 0, time.UTC).Unix()
	hi := time.Date(9999, 12, 30, 0, 0, 0, 0, time.UTC).Unix()
	return rapid.Custom(func(t *rapid.T) time.Time {
		ts := time.Unix(rapid.Int64Range(lo, hi).Draw(t, "sec"), rapid.Int64Range(0, 999_999_999).Draw(t, "nsec"))
		if offset := rapid.IntRange(-12*60, 14*60).Draw(t, "offset_min"); offset != 0 {
			return ts.In(time.FixedZone("", offset*60))
		}
		return ts.UTC()
	})
}

// SameAsEncodingJSON fails t unless write produces exactly the bytes
// encoding/json gives for reference (a value whose type has no MarshalJSON,
// so that reflection encodes it).
func SameAsEncodingJSON(t *rapid.T, reference any, write func(*jsonw.Writer)) {
	want, err := json.Marshal(reference)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	var w jsonw.Writer
	write(&w)
	if w.Err != nil {
		t.Fatalf("writer: %v", w.Err)
	}
	if string(w.B) != string(want) {
		t.Fatalf("writer gave\n%s\nencoding/json gives\n%s", w.B, want)
	}
}

package jsonw_test

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/jsonw"
	"github.com/nlocalmodels/orchestrator/pkg/jsonw/jsonwtest"
)

// Each writer must produce exactly encoding/json's bytes for the same value.
func TestWriterMatchesEncodingJSON(t *testing.T) {
	check := jsonwtest.SameAsEncodingJSON
	t.Run("string", rapid.MakeCheck(func(t *rapid.T) {
		s := rapid.OneOf(rapid.String(), rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) }), rapid.SampledFrom([]string{
			"", "plain", "quote\"back\\slash", "<html>&amp;", "\u2028\u2029", "\x00\x1f\x7f", "bad utf8 \xff\xfe", "tab\tnl\nbs\bff\fcr\r", "日本語 ünïcode 🚀",
		})).Draw(t, "s")
		check(t, s, func(w *jsonw.Writer) { w.String(s) })
	}))
	// Decimals of up to six places, the fast path (scores are rounded so).
	micros := rapid.Custom(func(t *rapid.T) float64 {
		return float64(rapid.Int64Range(-2e15, 2e15).Draw(t, "n")) / 1e6
	})
	t.Run("float", rapid.MakeCheck(func(t *rapid.T) {
		f := rapid.OneOf(rapid.Float64(), micros, rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 1e-6, 9.99e-7, 1e21, 9.99e20, -1e-7, 0.1, 1.0 / 3, math.MaxFloat64, math.SmallestNonzeroFloat64, 1e9, 999999999.999999, 0.000001, 0.1 + 0.2, 57, -3.5})).Draw(t, "f")
		check(t, f, func(w *jsonw.Writer) { w.Float(f) })
	}))
	t.Run("time", rapid.MakeCheck(func(t *rapid.T) {
		ts := jsonwtest.Time().Draw(t, "ts")
		check(t, ts, func(w *jsonw.Writer) { w.Time(ts) })
	}))
	t.Run("strings", rapid.MakeCheck(func(t *rapid.T) {
		v := rapid.OneOf(rapid.Just([]string(nil)), rapid.SliceOf(rapid.String())).Draw(t, "v")
		check(t, v, func(w *jsonw.Writer) { w.Strings(v) })
	}))
	t.Run("omitempty members", rapid.MakeCheck(func(t *rapid.T) {
		type obj struct {
			S  string   `json:"s,omitempty"`
			I  int64    `json:"i,omitempty"`
			U  uint64   `json:"u,omitempty"`
			F  float64  `json:"f,omitempty"`
			SS []string `json:"ss,omitempty"`
		}
		v := obj{
			S:  rapid.OneOf(rapid.Just(""), rapid.String()).Draw(t, "s"),
			I:  rapid.OneOf(rapid.Just(int64(0)), rapid.Int64()).Draw(t, "i"),
			U:  rapid.OneOf(rapid.Just(uint64(0)), rapid.Uint64()).Draw(t, "u"),
			F:  rapid.OneOf(rapid.Just(0.0), rapid.Just(math.Copysign(0, -1)), micros).Draw(t, "f"),
			SS: rapid.OneOf(rapid.Just([]string(nil)), rapid.SliceOf(rapid.String())).Draw(t, "ss"),
		}
		check(t, v, func(w *jsonw.Writer) {
			w.Open()
			w.StringOmitEmpty("s", v.S)
			w.IntOmitEmpty("i", v.I)
			w.UintOmitEmpty("u", v.U)
			w.FloatOmitEmpty("f", v.F)
			w.StringsOmitEmpty("ss", v.SS)
			w.Close()
		})
	}))
	t.Run("object", rapid.MakeCheck(func(t *rapid.T) {
		type obj struct {
			A int64  `json:"a"`
			B uint64 `json:"b"`
			C bool   `json:"c"`
			D any    `json:"d"`
			E []any  `json:"e"`
		}
		v := obj{A: rapid.Int64().Draw(t, "a"), B: rapid.Uint64().Draw(t, "b"), C: rapid.Bool().Draw(t, "c"), E: []any{}}
		check(t, v, func(w *jsonw.Writer) {
			w.Open()
			w.Key("a")
			w.Int(v.A)
			w.Key("b")
			w.Uint(v.B)
			w.Key("c")
			w.Bool(v.C)
			w.Key("d")
			w.Null()
			w.Key("e")
			w.OpenArray()
			w.CloseArray()
			w.Close()
		})
	}))
}

func TestWriterRefusesWhatJSONCannotCarry(t *testing.T) {
	tests := []struct {
		name  string
		write func(*jsonw.Writer)
	}{
		{"NaN", func(w *jsonw.Writer) { w.Float(math.NaN()) }},
		{"+Inf", func(w *jsonw.Writer) { w.Float(math.Inf(1)) }},
		{"-Inf", func(w *jsonw.Writer) { w.Float(math.Inf(-1)) }},
		{"year 10000", func(w *jsonw.Writer) { w.Time(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)) }},
		{"year -1", func(w *jsonw.Writer) { w.Time(time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w jsonw.Writer
			w.Open()
			w.Key("v")
			tt.write(&w)
			w.Key("after")
			w.Float(math.NaN())
			w.Close()
			if !errors.Is(w.Err, jsonw.ErrUnsupportedValue) {
				t.Fatalf("Err = %v, want ErrUnsupportedValue", w.Err)
			}
			if !json.Valid(w.B) {
				t.Fatalf("output %s is not valid JSON", w.B)
			}
		})
	}
}

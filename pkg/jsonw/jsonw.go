// Package jsonw appends JSON for the messages on the selection hot path (the
// reply, the decision event). encoding/json spends most of its time in
// reflection there; these writers produce the same bytes as encoding/json
// would for the same struct (tests in each message's package hold them to
// it), without the reflection.
package jsonw

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrUnsupportedValue is the error for a value JSON cannot carry (NaN, ±Inf,
// a time outside years 0-9999).
var ErrUnsupportedValue = errors.New("json: unsupported value")

// Writer appends one JSON document to B. The first unsupported value is kept
// in Err; writing goes on so that callers check once at the end.
type Writer struct {
	B   []byte
	Err error
}

// Open starts an object.
func (w *Writer) Open() { w.B = append(w.B, '{') }

// Close ends an object.
func (w *Writer) Close() { w.B = append(w.B, '}') }

// OpenArray starts an array.
func (w *Writer) OpenArray() { w.B = append(w.B, '[') }

// CloseArray ends an array.
func (w *Writer) CloseArray() { w.B = append(w.B, ']') }

// Key writes a member name, preceded by a comma unless it is the first
// member. name must need no escaping (the callers pass their json tags).
func (w *Writer) Key(name string) {
	w.comma()
	w.B = append(w.B, '"')
	w.B = append(w.B, name...)
	w.B = append(w.B, '"', ':')
}

// The OmitEmpty methods write a member the way encoding/json writes a field
// tagged omitempty: its name and value, or nothing for the zero value.

// StringOmitEmpty writes member key unless v is "".
func (w *Writer) StringOmitEmpty(key, v string) {
	if v != "" {
		w.Key(key)
		w.String(v)
	}
}

// IntOmitEmpty writes member key unless v is 0.
func (w *Writer) IntOmitEmpty(key string, v int64) {
	if v != 0 {
		w.Key(key)
		w.Int(v)
	}
}

// UintOmitEmpty writes member key unless v is 0.
func (w *Writer) UintOmitEmpty(key string, v uint64) {
	if v != 0 {
		w.Key(key)
		w.Uint(v)
	}
}

// FloatOmitEmpty writes member key unless v is 0.
func (w *Writer) FloatOmitEmpty(key string, v float64) {
	if v != 0 {
		w.Key(key)
		w.Float(v)
	}
}

// StringsOmitEmpty writes member key unless v is empty.
func (w *Writer) StringsOmitEmpty(key string, v []string) {
	if len(v) > 0 {
		w.Key(key)
		w.Strings(v)
	}
}

// Element separates array elements; call it before each one.
func (w *Writer) Element() { w.comma() }

func (w *Writer) comma() {
	if n := len(w.B); n > 0 && w.B[n-1] != '{' && w.B[n-1] != '[' {
		w.B = append(w.B, ',')
	}
}

// Null writes null.
func (w *Writer) Null() { w.B = append(w.B, "null"...) }

// Bool writes true or false.
func (w *Writer) Bool(v bool) { w.B = strconv.AppendBool(w.B, v) }

// Int writes an integer.
func (w *Writer) Int(v int64) { w.B = strconv.AppendInt(w.B, v, 10) }

// Uint writes an unsigned integer.
func (w *Writer) Uint(v uint64) { w.B = strconv.AppendUint(w.B, v, 10) }

// Float writes f as encoding/json does: the shortest representation, in
// exponent form only below 1e-6 or from 1e21.
func (w *Writer) Float(f float64) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		w.fail(fmt.Errorf("%w: %v", ErrUnsupportedValue, f))
		w.B = append(w.B, '0')
		return
	}
	abs := math.Abs(f)
	if abs >= 1e-6 && abs < 1e9 {
		// Scores are rounded to 6 decimals and samples are mostly whole:
		// when f is exactly the double nearest some n/1e6, that decimal with
		// its trailing zeros dropped is the shortest one that reads back as
		// f, which is what strconv would find, several times slower.
		if n := math.Round(f * 1e6); n/1e6 == f {
			w.micros(int64(n))
			return
		}
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	w.B = strconv.AppendFloat(w.B, f, format, -1, 64)
	if format == 'e' {
		// e-07 -> e-7, as encoding/json writes it.
		if n := len(w.B); n >= 4 && w.B[n-4] == 'e' && w.B[n-3] == '-' && w.B[n-2] == '0' {
			w.B[n-2] = w.B[n-1]
			w.B = w.B[:n-1]
		}
	}
}

// micros writes n/1e6 in decimal without trailing zeros; |n| < 1e15.
func (w *Writer) micros(n int64) {
	if n < 0 {
		w.B = append(w.B, '-')
		n = -n
	}
	w.B = strconv.AppendInt(w.B, n/1e6, 10)
	frac := n % 1e6
	if frac == 0 {
		return
	}
	var digits [7]byte
	digits[0] = '.'
	for i := 6; i >= 1; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	end := 7
	for digits[end-1] == '0' {
		end--
	}
	w.B = append(w.B, digits[:end]...)
}

// Time writes t as a quoted RFC 3339 timestamp with nanoseconds, as
// time.Time's MarshalJSON does.
func (w *Writer) Time(t time.Time) {
	w.B = append(w.B, '"')
	b, err := t.AppendText(w.B)
	if err != nil {
		w.fail(fmt.Errorf("%w: %w", ErrUnsupportedValue, err))
		b = w.B
	}
	w.B = append(b, '"')
}

// Strings writes a string array, or null for a nil slice.
func (w *Writer) Strings(v []string) {
	if v == nil {
		w.Null()
		return
	}
	w.OpenArray()
	for _, s := range v {
		w.Element()
		w.String(s)
	}
	w.CloseArray()
}

func (w *Writer) fail(err error) {
	if w.Err == nil {
		w.Err = err
	}
}

const hex = "0123456789abcdef"

// verbatim marks the ASCII bytes a string carries unescaped.
var verbatim = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// String writes s quoted, escaped as encoding/json escapes it: HTML-safe,
// invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func (w *Writer) String(s string) {
	b := append(w.B, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if verbatim[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	w.B = append(b, '"')
}

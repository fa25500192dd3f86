package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// BaseURI is the prefix of every schema's $id; a schema's $id is BaseURI + its file name.
const BaseURI = "https://nlocalmodels.dev/orchestrator/schemas/"

// Name names one schema, i.e. one kind of document.
type Name string

// The documents of the orchestrator.
const (
	ModelRegistryFile  Name = "model-registry-file"
	TaskCategoriesFile Name = "task-categories-file"
	Model              Name = "model"
	Category           Name = "category"
	Benchmark          Name = "benchmark"
	SelectionConfig    Name = "selection-config"
	SelectionRequest   Name = "selection-request"
	SelectionReply     Name = "selection-reply"
	GPUSample          Name = "gpu-sample"
	SelectionEvent     Name = "selection-event"
)

var names = []Name{
	ModelRegistryFile, TaskCategoriesFile, Model, Category, Benchmark,
	SelectionConfig, SelectionRequest, SelectionReply, GPUSample, SelectionEvent,
}

// All returns every schema name.
func All() []Name { return slices.Clone(names) }

// File is the schema's file name in Files(), e.g. "model.schema.json".
func (n Name) File() string { return string(n) + ".schema.json" }

// ID is the schema's $id.
func (n Name) ID() string { return BaseURI + n.File() }

// Known reports whether n is one of All().
func (n Name) Known() bool { return slices.Contains(names, n) }

//go:embed *.schema.json
var files embed.FS

// Files returns the embedded schema files, "<name>.schema.json" at the root.
func Files() fs.FS { return files }

// Source returns the text of one schema, e.g. for a CLI to print it.
func Source(n Name) ([]byte, error) {
	if !n.Known() {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSchema, n)
	}
	return files.ReadFile(n.File())
}

var (
	compileOnce sync.Once
	compiled    map[Name]*jsonschema.Schema
	compileErr  error
	// rawSchemas holds each decoded schema by $id, to read the keywords
	// behind a violation (see keyPattern).
	rawSchemas map[string]any
)

// compileAll compiles every schema once; the compiled schemas are safe for
// concurrent use.
func compileAll() (map[Name]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		raw := make(map[string]any, len(names))
		for _, n := range names {
			src, err := files.ReadFile(n.File())
			if err != nil {
				compileErr = fmt.Errorf("%w: %s: %w", ErrCompile, n.File(), err)
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(src))
			if err != nil {
				compileErr = fmt.Errorf("%w: %s: %w", ErrCompile, n.File(), err)
				return
			}
			if err := c.AddResource(n.ID(), doc); err != nil {
				compileErr = fmt.Errorf("%w: %s: %w", ErrCompile, n.File(), err)
				return
			}
			raw[n.ID()] = doc
		}
		m := make(map[Name]*jsonschema.Schema, len(names))
		for _, n := range names {
			s, err := c.Compile(n.ID())
			if err != nil {
				compileErr = fmt.Errorf("%w: %s: %w", ErrCompile, n.File(), err)
				return
			}
			m[n] = s
		}
		compiled, rawSchemas = m, raw
	})
	return compiled, compileErr
}

// Validate checks a JSON document against the named schema. It returns an
// error wrapping ErrUnknownSchema, ErrMalformedJSON (with the byte offset) or
// ErrCompile, or a *ValidationError (which wraps ErrInvalid) listing every
// violation.
func Validate(name Name, doc []byte) error {
	if !name.Known() {
		return fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	v, err := Decode(doc)
	if err != nil {
		return err
	}
	return ValidateValue(name, v)
}

// ValidateValue checks an already decoded JSON value (maps, slices, strings,
// bool, nil, and json.Number or float64 numbers) against the named schema.
// Decode with json.Decoder.UseNumber for exact integer bounds.
func ValidateValue(name Name, v any) error {
	if !name.Known() {
		return fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	all, err := compileAll()
	if err != nil {
		return err
	}
	if bad := hugeNumbers(v, nil, nil); len(bad) > 0 {
		return &ValidationError{Schema: name, Violations: bad}
	}
	err = all[name].Validate(v)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	out := &ValidationError{Schema: name}
	flatten(verr, &out.Violations)
	slices.SortStableFunc(out.Violations, func(a, b Violation) int {
		if c := strings.Compare(a.Pointer, b.Pointer); c != 0 {
			return c
		}
		if c := strings.Compare(a.Property, b.Property); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	out.Violations = slices.Compact(out.Violations)
	return out
}

// Decode parses one JSON document the way Validate does: numbers as
// json.Number, trailing data refused, errors wrapping ErrMalformedJSON with
// the byte offset. Its result can be given to ValidateValue.
func Decode(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("%w at byte %d: %w", ErrMalformedJSON, syn.Offset, err)
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("%w at byte %d: empty document", ErrMalformedJSON, len(doc))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%w at byte %d: unexpected end of document", ErrMalformedJSON, len(doc))
		default:
			return nil, fmt.Errorf("%w at byte %d: %w", ErrMalformedJSON, dec.InputOffset(), err)
		}
	}
	end := int(dec.InputOffset())
	if rest := bytes.TrimLeft(doc[end:], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("%w at byte %d: data after the top-level value", ErrMalformedJSON, len(doc)-len(rest))
	}
	if err := duplicateKey(doc); err != nil {
		return nil, err
	}
	return v, nil
}

// duplicateKey reports the first key that appears twice in one object of
// doc, valid JSON: decoding keeps the last silently, so {"id": "a", "id":
// "b"} would be stored as "b" with no sign of "a".
func duplicateKey(doc []byte) error {
	if bytes.IndexByte(doc, '{') < 0 {
		return nil
	}
	type container struct {
		keys map[string]bool // nil for an array
		// wantKey: an object's next token is a key or its end.
		wantKey bool
	}
	var stack []*container
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end; Decode has reported any syntax error
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				top := stack[n-1]
				if top.keys[key] {
					return fmt.Errorf("%w at byte %d: key %q appears twice in one object", ErrMalformedJSON, dec.InputOffset(), key)
				}
				top.keys[key], top.wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &container{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &container{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

var printer = message.NewPrinter(language.English)

// flatten appends the leaves of the error tree: the keywords that failed, not
// the $ref/allOf nodes that merely lead to them.
func flatten(e *jsonschema.ValidationError, out *[]Violation) {
	ptr := pointer(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		// One violation per property, so that each can be reported on its own.
		for _, p := range k.Missing {
			*out = append(*out, Violation{Pointer: ptr, Keyword: "required", Property: p,
				Message: fmt.Sprintf("missing required property %q", p)})
		}
		return
	case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum:
		// The library says "exclusiveMinimum: got 0, want 0"; say which way.
		*out = append(*out, Violation{Pointer: ptr, Keyword: e.ErrorKind.KeywordPath()[0], Message: boundMessage(k)})
		return
	case *kind.AdditionalProperties:
		pattern := keyPattern(e.SchemaURL)
		for _, p := range k.Properties {
			msg := fmt.Sprintf("property %q is not allowed", p)
			if pattern != "" {
				msg = fmt.Sprintf("key %q does not match %s", p, pattern)
			}
			*out = append(*out, Violation{Pointer: ptr, Keyword: "additionalProperties", Property: p, Message: msg})
		}
		return
	}
	if len(e.Causes) == 0 {
		v := Violation{Pointer: ptr, Message: e.ErrorKind.LocalizedString(printer)}
		if kw := e.ErrorKind.KeywordPath(); len(kw) > 0 {
			v.Keyword = kw[0]
		}
		*out = append(*out, v)
		return
	}
	for _, c := range e.Causes {
		flatten(c, out)
	}
}

// boundMessage words a failed numeric bound: "maximum: got 2, want at most 1".
func boundMessage(k jsonschema.ErrorKind) string {
	var got, want *big.Rat
	var how string
	switch b := k.(type) {
	case *kind.Minimum:
		got, want, how = b.Got, b.Want, "at least"
	case *kind.Maximum:
		got, want, how = b.Got, b.Want, "at most"
	case *kind.ExclusiveMinimum:
		got, want, how = b.Got, b.Want, "more than"
	case *kind.ExclusiveMaximum:
		got, want, how = b.Got, b.Want, "less than"
	}
	return fmt.Sprintf("%s: got %s, want %s %s", k.KeywordPath()[0], ratString(got), how, ratString(want))
}

// maxExponent bounds a number's decimal exponent: float64 spans 1e-324 to
// 1e308, and the validator's exact arithmetic on 1e9999999 fails (the
// library then dereferences nil) or takes ages.
const maxExponent = 1000

// hugeNumbers lists the json.Numbers in v that no float64 holds or whose
// exponent is beyond maxExponent, with their pointers: the validator must
// not see them.
func hugeNumbers(v any, at []string, out []Violation) []Violation {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			out = hugeNumbers(e, append(at, k), out)
		}
	case []any:
		for i, e := range x {
			out = hugeNumbers(e, append(at, strconv.Itoa(i)), out)
		}
	case json.Number:
		s := string(x)
		_, err := strconv.ParseFloat(s, 64)
		exp := 0
		if i := strings.IndexAny(s, "eE"); i >= 0 {
			exp, _ = strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		}
		if err != nil || exp > maxExponent || exp < -maxExponent {
			out = append(out, Violation{Pointer: pointer(at), Keyword: "type",
				Message: fmt.Sprintf("number %.40s is beyond what a float64 holds", s)})
		}
	}
	return out
}

// ratString writes a bound's number as a person would: 1000000, not
// 1e+06; beyond int64, as a float (1e+100, not a hundred digits).
func ratString(r *big.Rat) string {
	if r.IsInt() && r.Num().IsInt64() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// keyPattern returns the key pattern of a map-like object schema (one
// patternProperties entry), so that a bad map key is reported as such rather
// than as an unknown property. Maps use patternProperties, not propertyNames,
// because jsonschema v6.0.3 reports propertyNames failures at a wrong
// instance location.
func keyPattern(schemaURL string) string {
	id, frag, _ := strings.Cut(schemaURL, "#")
	node := rawSchemas[id]
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		obj, ok := node.(map[string]any)
		if !ok {
			return ""
		}
		node = obj[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
	}
	obj, _ := node.(map[string]any)
	pp, _ := obj["patternProperties"].(map[string]any)
	if len(pp) != 1 {
		return ""
	}
	for pattern := range pp {
		return pattern
	}
	return ""
}

// pointer renders instance location tokens as an RFC 6901 JSON pointer.
func pointer(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		sb.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return sb.String()
}

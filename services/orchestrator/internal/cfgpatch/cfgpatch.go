// Package cfgpatch turns `key=value` arguments into a JSON merge patch of
// selection.Config, the body of the registry's config.patch: the keys are the
// config's JSON names (nested ones dotted, e.g. confidence.primary) and each
// value is parsed as the type of its field, so a typo is refused here with
// the list of valid keys instead of being stored.
package cfgpatch

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// ErrUnknownKey: the key names no field of selection.Config.
var ErrUnknownKey = errors.New("unknown config key")

// ErrBadValue: the value cannot be read as the type of its field.
var ErrBadValue = errors.New("bad config value")

// ErrSyntax: an argument is not of the form key=value.
var ErrSyntax = errors.New("config setting is not key=value")

// ErrRepeatedKey: a key is given more than once (which value was meant?).
var ErrRepeatedKey = errors.New("config key given more than once")

// Key is one settable config field.
type Key struct {
	// Name is the dotted JSON path, e.g. "confidence.primary".
	Name string
	// Kind is the field's kind: bool, string, int or float.
	Kind string
}

var keys = collect(reflect.TypeFor[selection.Config](), "")

// Keys lists every settable key, sorted by name.
func Keys() []Key { return slices.Clone(keys) }

// KeyNames lists the key names, sorted.
func KeyNames() []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	return out
}

func collect(t reflect.Type, prefix string) []Key {
	var out []Key
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		full := prefix + name
		switch f.Type.Kind() {
		case reflect.Struct:
			out = append(out, collect(f.Type, full+".")...)
		case reflect.Bool:
			out = append(out, Key{full, "bool"})
		case reflect.String:
			out = append(out, Key{full, "string"})
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			out = append(out, Key{full, "int"})
		case reflect.Float32, reflect.Float64:
			out = append(out, Key{full, "float"})
		}
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func lookup(name string) (Key, bool) {
	i, ok := slices.BinarySearchFunc(keys, name, func(k Key, n string) int { return strings.Compare(k.Name, n) })
	if !ok {
		return Key{}, false
	}
	return keys[i], true
}

// Parse reads key=value arguments into a merge patch (nested maps keyed by
// JSON name). Every bad argument is reported, joined; an unknown key's error
// lists the valid ones; a key given twice is refused.
func Parse(args []string) (map[string]any, error) {
	patch := map[string]any{}
	var errs []error
	unknown := false
	seen := map[string]bool{}
	for _, arg := range args {
		name, raw, ok := strings.Cut(arg, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			errs = append(errs, fmt.Errorf("%w: %q", ErrSyntax, arg))
			continue
		}
		k, ok := lookup(name)
		if !ok {
			errs = append(errs, fmt.Errorf("%w: %q", ErrUnknownKey, name))
			unknown = true
			continue
		}
		if seen[k.Name] { // which one was meant?
			errs = append(errs, fmt.Errorf("%w: %s", ErrRepeatedKey, k.Name))
			continue
		}
		seen[k.Name] = true
		v, err := parseValue(k, strings.TrimSpace(raw))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		set(patch, strings.Split(k.Name, "."), v)
	}
	if unknown {
		errs = append(errs, fmt.Errorf("valid keys: %s", strings.Join(KeyNames(), ", ")))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return patch, nil
}

func parseValue(k Key, raw string) (any, error) {
	bad := func(err error) error {
		return fmt.Errorf("%w: %s=%q: want %s: %w", ErrBadValue, k.Name, raw, k.Kind, err)
	}
	switch k.Kind {
	case "bool":
		v, err := strconv.ParseBool(raw)
		if err != nil {
			return nil, bad(err)
		}
		return v, nil
	case "int":
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return nil, bad(err)
		}
		return v, nil
	case "float":
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, bad(err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, bad(errors.New("not a finite number"))
		}
		return v, nil
	default:
		return raw, nil
	}
}

func set(m map[string]any, path []string, v any) {
	for _, p := range path[:len(path)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[path[len(path)-1]] = v
}

// Flatten lists a config as key/value strings in key order, for display
// and for showing what a patch changed.
func Flatten(cfg selection.Config) [][2]string {
	v := reflect.ValueOf(cfg)
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, [2]string{k.Name, fmt.Sprint(field(v, strings.Split(k.Name, ".")).Interface())})
	}
	return out
}

// field finds the struct field of a dotted JSON path (known to exist).
func field(v reflect.Value, path []string) reflect.Value {
	for _, p := range path {
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if name == p {
				v = v.Field(i)
				break
			}
		}
	}
	return v
}

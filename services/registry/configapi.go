package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
	"github.com/nlocalmodels/orchestrator/schemas"
)

// parseConfig checks a selection config against its schema (400 with every
// violation) and then its cross-field rules (422 with every broken rule).
func parseConfig(data []byte) (selection.Config, error) {
	cfg, err := selection.ParseConfig(data)
	var sv *schemas.ValidationError
	switch {
	case err == nil:
		return cfg, nil
	case errors.As(err, &sv):
		return selection.Config{}, schemaError("selection config", err)
	case errors.Is(err, selection.ErrInvalidConfig):
		lines := strings.Split(err.Error(), "\n")
		return selection.Config{}, &listError{err: fmt.Errorf("%w: %s", ErrRefused, lines[0]), cause: err, lines: lines}
	default:
		return selection.Config{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
}

func (s *Service) getConfig(ctx context.Context, _ []byte) (any, error) {
	e, err := readKey(ctx, s.st.config, bus.SelectionConfigKey)
	if err != nil {
		return nil, err
	}
	return storedConfig(e)
}

// storeConfig writes cfg unless it is what is stored, and returns its revision.
func (s *Service) storeConfig(ctx context.Context, what string, next func(cur entry) (selection.Config, error)) (selection.Config, uint64, error) {
	var cfg selection.Config
	var rev uint64
	revs, err := s.write(ctx, what, func(ctx context.Context) ([]op, error) {
		cur, err := readKey(ctx, s.st.config, bus.SelectionConfigKey)
		if err != nil {
			return nil, err
		}
		if cfg, err = next(cur); err != nil {
			return nil, err
		}
		b, err := encode("selection config", cfg)
		if err != nil {
			return nil, err
		}
		o, changed := setOp(s.st.config, bus.SelectionConfigKey, cur, b)
		if !changed {
			rev = cur.rev
			return nil, nil
		}
		return []op{o}, nil
	})
	if err != nil {
		return selection.Config{}, 0, err
	}
	if len(revs) == 1 {
		rev = revs[0]
	}
	return cfg, rev, nil
}

func (s *Service) putConfig(ctx context.Context, body []byte) (any, error) {
	cfg, err := parseConfig(body)
	if err != nil {
		return nil, err
	}
	_, rev, err := s.storeConfig(ctx, "put config", func(entry) (selection.Config, error) { return cfg, nil })
	if err != nil {
		return nil, err
	}
	return ConfigPutReply{Revision: rev}, nil
}

// patchConfig merges a partial config onto the stored one (objects merge
// key by key, anything else replaces), validates the result like a put and
// stores it: one request turns a feature off, the seed's rollback plan.
func (s *Service) patchConfig(ctx context.Context, body []byte) (any, error) {
	doc, err := schemas.Decode(body)
	if err != nil {
		return nil, fmt.Errorf("%w: config patch: %w", ErrBadRequest, err)
	}
	patch, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: config patch: must be a JSON object of selection config fields", ErrBadRequest)
	}
	cfg, _, err := s.storeConfig(ctx, "patch config", func(cur entry) (selection.Config, error) {
		base, err := storedConfig(cur)
		if err != nil {
			return selection.Config{}, err
		}
		b, err := encode("selection config", base)
		if err != nil {
			return selection.Config{}, err
		}
		merged, err := schemas.Decode(b)
		if err != nil {
			return selection.Config{}, fmt.Errorf("decode stored selection config: %w", err)
		}
		obj, ok := merged.(map[string]any)
		if !ok {
			return selection.Config{}, fmt.Errorf("stored selection config is no JSON object")
		}
		mergePatch(obj, patch)
		if b, err = encode("patched selection config", merged); err != nil {
			return selection.Config{}, err
		}
		return parseConfig(b)
	})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// mergePatch merges patch into dst: where both hold an object the objects
// merge, anything else in patch replaces what dst holds.
func mergePatch(dst, patch map[string]any) {
	for k, pv := range patch {
		if po, ok := pv.(map[string]any); ok {
			if do, ok := dst[k].(map[string]any); ok {
				mergePatch(do, po)
				continue
			}
		}
		dst[k] = pv
	}
}

package registry

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// Config is the service's configuration, read with envconfig prefix REGISTRY
// (e.g. REGISTRY_SEED_REGISTRY); the NATS settings keep their own names
// (NATS_URL...). Go callers that build it by hand get no envconfig defaults:
// set Provision themselves; a zero RequestTimeout means the default.
type Config struct {
	bus.ConnConfig

	// SeedRegistry and SeedCategories are a MODEL_REGISTRY.json and a
	// task_categories.json, both or neither. They are imported when both
	// catalog buckets are empty at start, and never overwrite data.
	SeedRegistry   string `envconfig:"SEED_REGISTRY"`
	SeedCategories string `envconfig:"SEED_CATEGORIES"`
	// SeedConfig is a selection config JSON stored when the config key is
	// absent at start; without it selection.DefaultConfig() is stored.
	SeedConfig string `envconfig:"SEED_CONFIG"`

	// Provision runs bus.Provision at start so a fresh NATS works; turn it
	// off for accounts that may not create streams (see `orchestrator provision`).
	Provision bool `envconfig:"PROVISION" default:"true"`
	// Replicas is the replica count Provision gives streams and buckets (3 in
	// a cluster). 0, the default, keeps each existing one's count and makes
	// new ones R1, so that a registry started with defaults never scales an
	// R3 cluster's streams down.
	Replicas int `envconfig:"REPLICAS"`
	// RequestTimeout bounds one request's NATS work (an import included).
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"30s"`
	// MetricsAddr serves /metrics, /healthz and /readyz (cmd/registry only).
	MetricsAddr string `envconfig:"METRICS_ADDR" default:":9101"`
}

const (
	defaultRequestTimeout = 30 * time.Second
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.RequestTimeout == 0 {
		out.RequestTimeout = defaultRequestTimeout
	}
	return out
}

// Validate returns an error wrapping ErrConfig that names every setting
// that cannot work. New calls it; the binary calls it first, so that a bad
// REGISTRY_* variable is reported before anything connects.
func (c *Config) Validate() error {
	var problems []string
	if (c.SeedRegistry == "") != (c.SeedCategories == "") {
		problems = append(problems, "REGISTRY_SEED_REGISTRY and REGISTRY_SEED_CATEGORIES must be set together")
	}
	if c.RequestTimeout < 0 {
		problems = append(problems, fmt.Sprintf("REGISTRY_REQUEST_TIMEOUT %s must be positive", c.RequestTimeout))
	}
	if c.Replicas < 0 {
		problems = append(problems, fmt.Sprintf("REGISTRY_REPLICAS %d must not be negative (0 keeps what is there)", c.Replicas))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// Option tunes New.
type Option func(*Service)

// WithLogger sets the service's logger (default: zerolog's global logger).
func WithLogger(l zerolog.Logger) Option { return func(s *Service) { s.log = l } }

// WithSeedData seeds empty catalog buckets from these documents (a
// MODEL_REGISTRY.json and a task_categories.json), e.g. the embedded example
// data of the all-in-one binary. Seed files named in Config take precedence.
func WithSeedData(registry, categories []byte) Option {
	return func(s *Service) {
		s.seed = &seedDocs{
			registryName: "embedded " + defaultRegistryName, registry: registry,
			categoriesName: "embedded " + defaultCategoriesName, categories: categories,
		}
	}
}

// seedDocs are the documents seeding imports into empty buckets.
type seedDocs struct {
	registryName, categoriesName string
	registry, categories         []byte
}

// loadSeeds reads the seed files of cfg into s and checks every seed, so that
// a bad seed stops the service at once rather than when the buckets are empty.
func (s *Service) loadSeeds() error {
	if s.cfg.SeedRegistry != "" {
		reg, errR := os.ReadFile(s.cfg.SeedRegistry)
		cats, errC := os.ReadFile(s.cfg.SeedCategories)
		for _, err := range []error{errR, errC} {
			if err != nil {
				return fmt.Errorf("%w: seed: %w", ErrConfig, err)
			}
		}
		s.seed = &seedDocs{registryName: s.cfg.SeedRegistry, registry: reg, categoriesName: s.cfg.SeedCategories, categories: cats}
	}
	if s.seed != nil {
		if _, err := parseDocs(s.seed.registryName, s.seed.registry, s.seed.categoriesName, s.seed.categories); err != nil {
			return fmt.Errorf("%w: seed catalog: %w", ErrConfig, err)
		}
	}
	cfg := selection.DefaultConfig()
	if s.cfg.SeedConfig != "" {
		data, err := os.ReadFile(s.cfg.SeedConfig)
		if err != nil {
			return fmt.Errorf("%w: seed: %w", ErrConfig, err)
		}
		if cfg, err = parseConfig(data); err != nil {
			return fmt.Errorf("%w: seed config %s: %w", ErrConfig, s.cfg.SeedConfig, err)
		}
	}
	s.seedConfig = cfg
	return nil
}

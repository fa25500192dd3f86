// Package orchestrator is the module of the model orchestrator's one binary,
// cmd/orchestrator: `orchestrator serve` runs embedded NATS and the four
// services in one process (internal/allinone), and the other verbs are the
// command line of the system (internal/cli). internal/whatif re-scores
// recorded decisions, internal/eventlog reads the decision stream and
// internal/cfgpatch turns `config set key=value` into a config patch.
package orchestrator

// Package orchestrator is the orchestrator service of the model orchestrator.
package orchestrator

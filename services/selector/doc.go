// Package selector is the selector service of the model orchestrator.
package selector

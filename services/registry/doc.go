// Package registry is the registry service of the model orchestrator.
package registry

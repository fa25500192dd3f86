// Package metricssink is the metrics-sink service of the model orchestrator.
package metricssink

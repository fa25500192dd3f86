// Package schemas embeds the JSON Schemas (2020-12) that are the source of
// truth for every message and file of the orchestrator.
package schemas

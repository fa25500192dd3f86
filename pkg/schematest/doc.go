// Package schematest holds the tests that keep the JSON Schemas of module schemas and the Go contract types in agreement.
package schematest

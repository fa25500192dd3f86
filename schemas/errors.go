package schemas

import "errors"

// Sentinel errors of Validate and ValidateValue; test with errors.Is.
var (
	// ErrUnknownSchema: the Name is not one of All().
	ErrUnknownSchema = errors.New("unknown schema")
	// ErrMalformedJSON: the document is not JSON; the error gives the byte offset.
	ErrMalformedJSON = errors.New("malformed JSON")
	// ErrInvalid: the document does not match its schema; the error is a
	// *ValidationError listing every violation.
	ErrInvalid = errors.New("document does not match its schema")
	// ErrCompile: an embedded schema does not compile (a bug in this module,
	// caught by its tests).
	ErrCompile = errors.New("embedded schema does not compile")
)

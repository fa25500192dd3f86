package schemas

import (
	"fmt"
	"strings"
)

// ValidationError lists every violation of one document against its schema.
type ValidationError struct {
	Schema     Name
	Violations []Violation // sorted by Pointer
}

// Violation is one failed keyword.
type Violation struct {
	// Pointer is the JSON pointer (RFC 6901) of the failing value, "" for the
	// root. For required, additionalProperties and propertyNames it is the
	// object's pointer and Property names the property.
	Pointer string
	// Keyword is the schema keyword that failed, e.g. "maximum", "required".
	Keyword  string
	Property string
	Message  string
}

// Location is the pointer as printed: "(root)" for the root.
func (v Violation) Location() string {
	if v.Pointer == "" {
		return "(root)"
	}
	return v.Pointer
}

func (e *ValidationError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: schema %q: %d violation(s)", ErrInvalid, e.Schema, len(e.Violations))
	for _, v := range e.Violations {
		fmt.Fprintf(&sb, "; %s: %s", v.Location(), v.Message)
	}
	return sb.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

package bus

// Micro error codes (the Nats-Service-Error-Code header) every service uses.
const (
	CodeBadRequest    = "400"
	CodeNotFound      = "404"
	CodeUnprocessable = "422"
	CodeInternal      = "500"
	CodeNotReady      = "503"
)

// ErrorBody is the JSON body of a micro error reply: what was wrong, and for
// validation failures each problem found.
type ErrorBody struct {
	Error    string   `json:"error"`
	Problems []string `json:"problems,omitempty"`
}

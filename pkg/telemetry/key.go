package telemetry

import "strconv"

// Key identifies a GPU across samples and services: "<host>/<index>".
func Key(host string, index int) string { return host + "/" + strconv.Itoa(index) }

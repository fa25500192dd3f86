//go:build !unix

package allinone

// lockDataDir does not lock here: the platform has no flock.
func lockDataDir(string) (release func(), err error) { return func() {}, nil }

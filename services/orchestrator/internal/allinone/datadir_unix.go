//go:build unix

package allinone

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on dir's lock file: NATS does not
// lock its store, and two servers writing one store corrupt its streams.
// The lock goes with the process, so a crashed serve leaves none behind.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: lock %s: %w", ErrStart, path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%w: %s is in use by another orchestrator serve (it holds %s): stop it, or give this one another --data-dir", ErrDataDirInUse, dir, path)
	}
	return func() { _ = f.Close() }, nil
}

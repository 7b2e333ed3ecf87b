//go:build !unix

package embedded

import "os"

// tryLock: this platform has no flock; the data directory is not guarded.
func tryLock(*os.File) (bool, error) { return false, nil }

func unlockFile(*os.File) error { return nil }

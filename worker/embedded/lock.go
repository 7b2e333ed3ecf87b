package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file in the data directory that an embedded server holds
// locked for as long as it runs; it names the holder's PID.
const LockFile = "xygroup.lock"

// StoreDirInUseError: another process runs an embedded server on the data
// directory. Two servers on one store would corrupt it.
type StoreDirInUseError struct {
	Dir string // absolute path
	PID int    // the holder's process id; 0 when it could not be read
}

func (e *StoreDirInUseError) Error() string {
	holder := "another process"
	switch {
	case e.PID == os.Getpid():
		holder = fmt.Sprintf("another server of this process (PID %d)", e.PID)
	case e.PID > 0:
		holder = fmt.Sprintf("another process (PID %d)", e.PID)
	}
	return fmt.Sprintf("embedded NATS: data directory %s is in use by %s; two servers must not share one store", e.Dir, holder)
}

// dirLock is a held lock on a data directory.
type dirLock struct{ f *os.File }

// lockStoreDir creates dir when missing and locks it for this process, writing
// the PID into the lock file. The lock lasts until unlock or the process's end
// (the kernel drops it then, so a crash leaves no stale lock behind).
func lockStoreDir(dir string) (*dirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, storeDirError(abs, err)
	}
	f, err := os.OpenFile(filepath.Join(abs, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, storeDirError(abs, err)
	}
	held, err := tryLock(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("embedded NATS: lock %s: %w", f.Name(), err)
	}
	if held {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
		_ = f.Close()
		return nil, &StoreDirInUseError{Dir: abs, PID: pid}
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	// The server keeps its files in a subdirectory: one left behind by another
	// user would fail the start later, with less to say.
	if err := checkWritable(filepath.Join(abs, "jetstream")); err != nil {
		_ = unlockFile(f)
		_ = f.Close()
		return nil, storeDirError(abs, err)
	}
	return &dirLock{f: f}, nil
}

// checkWritable: a file can be created in dir, when it exists.
func checkWritable(dir string) error {
	probe, err := os.CreateTemp(dir, ".xygroup-probe-*")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &fs.PathError{Op: "write", Path: dir, Err: err}
	}
	_ = probe.Close()
	return os.Remove(probe.Name())
}

// storeDirError names the data directory and what failed; the path of the
// failed call only when it is another one (a parent that is a file).
func storeDirError(dir string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && (pe.Path == dir || filepath.Dir(pe.Path) == dir) {
		err = pe.Err
	}
	return fmt.Errorf("embedded NATS: store directory %s: %w", dir, err)
}

// unlock releases the lock. The file stays: removing it could let two processes
// lock two different files of the same name.
func (l *dirLock) unlock() {
	if l == nil {
		return
	}
	_ = unlockFile(l.f)
	_ = l.f.Close()
}

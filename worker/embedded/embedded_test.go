package embedded

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// One store, one server: a second on the same directory fails while the first
// runs, and starts once the first has stopped.
func TestStoreDirLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := Start(Config{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(Config{StoreDir: dir})
	var inUse *StoreDirInUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		if second != nil {
			second.Stop()
		}
		first.Stop()
		t.Fatalf("second server on one store: %v", err)
	}
	t.Log(err)
	first.Stop()
	third, err := Start(Config{StoreDir: dir})
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	third.Stop()
}

// A server that cannot start says why at once: the port in use, or the data
// directory that cannot be made (a regular file on its path, which holds for
// root too), rather than a timeout.
func TestStartErrorsNameTheCause(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := Start(Config{Listen: ln.Addr().String(), StoreDir: t.TempDir()})
	if err == nil {
		s.Stop()
		t.Fatalf("started on %s, which is in use", ln.Addr())
	}
	want := "embedded NATS: listen " + ln.Addr().String() + ": address already in use"
	if err.Error() != want || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("port in use: %v, want %q", err, want)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "data")
	s, err = Start(Config{StoreDir: dir})
	if err == nil {
		s.Stop()
		t.Fatalf("started on %s", dir)
	}
	if !strings.Contains(err.Error(), "store directory "+dir) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("store directory under a file: %v", err)
	}
}

package embedded

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
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

// A server that listens beyond loopback, where it has no users and no TLS,
// says so in a warning that names the address; on loopback it says nothing.
func TestWarnsWhenListeningBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		warns  bool
	}{
		{"127.0.0.1:0", false},
		{"localhost:0", false},
		{"[::1]:0", false},
		{"0.0.0.0:0", true},
		{":0", true},
	} {
		var buf bytes.Buffer
		log := zerolog.New(&buf)
		s, err := Start(Config{Listen: tc.listen, Logger: &log})
		if err != nil {
			if tc.listen == "[::1]:0" {
				continue // no IPv6 here
			}
			t.Fatalf("%s: %v", tc.listen, err)
		}
		addr := s.Addr().String()
		s.Stop()
		var warning bool
		for _, line := range strings.Split(buf.String(), "\n") {
			if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "beyond loopback") {
				warning = true
				if !strings.Contains(line, `"listen":"`+addr+`"`) || !strings.Contains(line, "without authentication") {
					t.Errorf("%s: the warning does not name the address %s or say why: %s", tc.listen, addr, line)
				}
			}
		}
		if warning != tc.warns {
			t.Errorf("%s: warning %v, want %v:\n%s", tc.listen, warning, tc.warns, buf.String())
		}
	}
}

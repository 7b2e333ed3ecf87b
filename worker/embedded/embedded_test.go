package embedded

import (
	"errors"
	"os"
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

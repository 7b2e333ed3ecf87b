package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/xygroup/xygroup/worker/clusterstatus"
)

// The command views' cache is bounded in bytes, not only in entries: each
// entry keeps a command's terminal event as the stream holds it (up to 512
// KiB) beside the record's copy, so 300 views of large events read within the
// cache's second must not all be kept.
func TestCommandCacheBoundedInBytes(t *testing.T) {
	const bound = 64 << 20 // a bound well below the pod's memory limit
	body := json.RawMessage(make([]byte, 512<<10))
	cc := newCommandCache()
	for i := range 300 {
		key := fmt.Sprintf("ent\x00cmd-%d", i)
		_, err := cc.get(context.Background(), key, func(context.Context) (*clusterstatus.Command, error) {
			return &clusterstatus.Command{CommandID: key, Terminal: &clusterstatus.CommandEvent{Body: body}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var held int
	for _, e := range cc.entries {
		held += len(e.c.Terminal.Body) + len(e.c.Record.TerminalEvent)
	}
	if held > bound {
		t.Fatalf("the cache holds %d entries, %d MiB of events, more than %d MiB", len(cc.entries), held>>20, bound>>20)
	}
}

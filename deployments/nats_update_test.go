package deployments

import (
	"context"
	"testing"

	"github.com/xygroup/xygroup/worker"
)

// accounts.conf: the worker user may look up and create the commands stream,
// "never purge or delete", and edits it "only to add xylink.groups.replay".
// An update that shrinks the stream's limits is a purge by another name: the
// worker user must not be able to drop stored commands with it.
func TestNATSWorkerCannotPurgeTheCommandsStreamByUpdate(t *testing.T) {
	s := startFromConfig(t)
	ctx := context.Background()
	wc := connectAs(t, s, "worker")
	cfg := worker.StreamSettings{}.CommandsStream()
	if _, err := wc.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	oc := connectAs(t, s, "operator")
	for range 3 {
		if _, err := oc.js.Publish(ctx, worker.SubjectCreate, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	shrunk := cfg
	shrunk.MaxMsgs = 1
	err := wc.try(func(ctx context.Context, c *client) error {
		_, err := c.js.UpdateStream(ctx, shrunk)
		return err
	})
	st, serr := oc.js.Stream(ctx, worker.StreamCommands)
	if serr != nil {
		t.Fatal(serr)
	}
	info, serr := st.Info(ctx)
	if serr != nil {
		t.Fatal(serr)
	}
	if err == nil || info.State.Msgs != 3 {
		t.Fatalf("the worker user shrank the commands stream (update refused: %v): %d of 3 commands left", err, info.State.Msgs)
	}
}

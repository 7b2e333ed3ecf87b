package worker

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/embedded"
)

// embeddedJS is JetStream on an embedded NATS server of the test's own, for
// the package's internal tests (package workertest imports this package).
func embeddedJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

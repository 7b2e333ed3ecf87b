package main

import (
	"context"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v3"
)

// A NATS password in NATS_URL never reaches an error message.
func TestNATSPasswordsAreRedacted(t *testing.T) {
	if got := redactURLs("nats://worker:s3cret-pw@host-a:4222,nats://tok3n-abc@host-b:4222,tls://host-c:4222"); strings.Contains(got, "s3cret-pw") ||
		strings.Contains(got, "tok3n-abc") || !strings.Contains(got, "host-a:4222") || !strings.Contains(got, "tls://host-c:4222") {
		t.Fatalf("redactURLs = %s", got)
	}
	addr := freeAddr(t) // nothing listens there
	_, errOut, err := runApp(context.Background(), "status", "--nats-url", "nats://operator:s3cret-pw@"+addr)
	if err == nil {
		t.Fatal("status connected to nothing")
	}
	if strings.Contains(err.Error(), "s3cret-pw") || strings.Contains(errOut, "s3cret-pw") {
		t.Fatalf("password in the error: %v %s", err, errOut)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Fatalf("the error does not say where: %v", err)
	}
}

// A password or token with '%', '#', '/' or a space, as a deployment puts it
// into NATS_URL from a secret, is refused with a message that quotes none of
// it, by the real binary's flag parsing; percent-encoded, it connects.
func TestNATSURLWithReservedCharactersIsRedacted(t *testing.T) {
	bin := buildBinary(t)
	addr := freeAddr(t)
	for _, tc := range []struct {
		userinfo  string
		fragments []string
	}{
		{"worker:alpha%bravo", []string{"alpha", "bravo"}},
		{"worker:charlie#delta", []string{"charlie", "delta"}},
		{"worker:echo foxtrot", []string{"echo", "foxtrot"}},
		{"worker:1234/hotel", []string{"1234", "hotel"}},
		{"india%juliet", []string{"india", "juliet"}},
	} {
		for _, args := range [][]string{{"status"}, {"worker", "--sandbox", "--http-addr", freeAddr(t)}} {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "NATS_URL=nats://other:pw-1@"+addr+",nats://"+tc.userinfo+"@"+addr)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("%s with %q: no error:\n%s", args[0], tc.userinfo, out)
			}
			for _, f := range tc.fragments {
				if strings.Contains(string(out), f) {
					t.Errorf("%s with %q: %q in the output:\n%s", args[0], tc.userinfo, f, out)
				}
			}
			if !strings.Contains(string(out), "nats://[redacted]@"+addr) || !strings.Contains(string(out), "percent-encoded") {
				t.Errorf("%s with %q: the error does not say which URL or what to do:\n%s", args[0], tc.userinfo, out)
			}
		}
	}

	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Username: "worker", Password: "charlie#delta %x/y?"}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	defer s.Shutdown()
	cmd := &cli.Command{Name: "t", Flags: natsFlags(), Action: func(ctx context.Context, cmd *cli.Command) error {
		nc, err := connectNATS(cmd, "encoded-test")
		if err == nil {
			nc.Close()
		}
		return err
	}}
	url := fmt.Sprintf("nats://worker:%s@%s", neturl.PathEscape("charlie#delta %x/y?"), s.Addr())
	if err := cmd.Run(context.Background(), []string{"t", "--nats-url", url}); err != nil {
		t.Fatalf("percent-encoded password: %v", err)
	}
}

// NATS_INBOX_PREFIX (or --nats-inbox-prefix) puts every reply subject of the
// connection, JetStream's included, under the user's own prefix, where the server
// lets that user alone subscribe.
func TestNATSInboxPrefix(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	defer s.Shutdown()
	responder, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Close()
	replies := make(chan string, 1)
	if _, err := responder.Subscribe("probe", func(m *nats.Msg) { replies <- m.Reply; _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	_ = responder.Flush()

	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"--nats-inbox-prefix", "_INBOX_publisher"}, want: "_INBOX_publisher."},
		{env: "_INBOX_events", want: "_INBOX_events."},
		{want: "_INBOX."},
	} {
		t.Setenv("NATS_INBOX_PREFIX", tc.env)
		var prefix string
		cmd := &cli.Command{Name: "t", Flags: natsFlags(), Action: func(ctx context.Context, cmd *cli.Command) error {
			nc, err := connectNATS(cmd, "inbox-test")
			if err != nil {
				return err
			}
			defer nc.Close()
			if _, err := nc.Request("probe", nil, 5*time.Second); err != nil {
				return err
			}
			prefix = nc.NewInbox()
			return nil
		}}
		if err := cmd.Run(context.Background(), append([]string{"t", "--nats-url", s.ClientURL()}, tc.args...)); err != nil {
			t.Fatalf("%v %q: %v", tc.args, tc.env, err)
		}
		if got := <-replies; !strings.HasPrefix(got, tc.want) || !strings.HasPrefix(prefix, tc.want) {
			t.Errorf("%v %q: reply subject %s, inbox %s, want prefix %s", tc.args, tc.env, got, prefix, tc.want)
		}
	}
	t.Setenv("NATS_INBOX_PREFIX", "_INBOX.>")
	cmd := &cli.Command{Name: "t", Flags: natsFlags(), Action: func(ctx context.Context, cmd *cli.Command) error {
		_, err := connectNATS(cmd, "inbox-test")
		return err
	}}
	if err := cmd.Run(context.Background(), []string{"t", "--nats-url", s.ClientURL()}); err == nil {
		t.Error("a wildcard inbox prefix was accepted")
	}
}

// A NATS URL without a scheme is one the client takes (nats:// is meant); with
// nothing listening there, the error names the address and says that no server
// answered.
func TestNATSURLWithNothingListening(t *testing.T) {
	addr := freeAddr(t)
	for _, url := range []string{addr, "nats://" + addr} {
		_, _, err := runApp(context.Background(), "status", "--nats-url", url)
		if err == nil || exitCode(err) != 1 {
			t.Fatalf("status --nats-url %s: %v, want exit 1", url, err)
		}
		want := "connect to NATS at " + url + ": no server answered at that address"
		if msg := err.Error(); !strings.Contains(msg, want) || strings.Contains(msg, "unparseable") {
			t.Errorf("status --nats-url %s: %q, want %q", url, msg, want)
		}
	}
}

// A NATS URL where something listens that is not a NATS server (the status
// page's port, given as http://…) says so, not "i/o timeout".
func TestNATSURLOfSomethingElse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts, and says nothing, as an HTTP server does
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	url := "http://" + ln.Addr().String()
	_, _, err = runApp(context.Background(), "status", "--nats-url", url)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("status --nats-url %s: %v, want exit 1", url, err)
	}
	want := "connect to NATS at " + url + ": something listens at that address but did not answer as a NATS server within 5s"
	if msg := err.Error(); !strings.Contains(msg, want) || strings.Contains(msg, "i/o timeout") {
		t.Errorf("status --nats-url %s: %q, want %q", url, msg, want)
	}
}

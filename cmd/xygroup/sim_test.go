package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// awaitHTTP polls url until it answers, or fails the test after the deadline.
func awaitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	awaitStatus(t, url, within, func(int) bool { return true })
}

// awaitStatus waits until url answers with a status that ok accepts.
func awaitStatus(t *testing.T, url string, within time.Duration, ok func(status int) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", url, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// `xygroup sim` answers the README's signed curl example, and stops cleanly.
func TestSimAnswersREADMECurlExample(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newApp().Run(ctx, []string{"xygroup", "sim", "--listen", addr, "--log-level", "warn"}) }()
	base := "http://" + addr
	awaitHTTP(t, base+"/sandbox/stats", 10*time.Second)

	resp, err := http.Post(base+"/sandbox/meetings", "application/json",
		strings.NewReader(`{"meetingRoomNumber":"910004217404","startsIn":"1h"}`))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create meeting: %v %v", resp, err)
	}
	curl := func() string {
		cmd := exec.Command("bash", "../../examples/signed-curl.sh")
		cmd.Env = append(cmd.Environ(), "XYLINK_BASE_URL="+base)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("signed-curl.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := curl(); !strings.Contains(out, `"errorCode":66620`) {
		t.Fatalf("before the start: %s", out)
	}
	if resp, err := http.Post(base+"/sandbox/meetings/910004217404/start", "", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("start: %v", err)
	}
	if out := curl(); !strings.Contains(out, `"groupNo":"mms`) {
		t.Fatalf("after the start: %s", out)
	}
	if out := curl(); !strings.Contains(out, `"errorCode":66684`) {
		t.Fatalf("second create: %s", out)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sim returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sim did not stop")
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

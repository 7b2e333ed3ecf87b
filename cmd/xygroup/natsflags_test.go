package main

import (
	"context"
	"strings"
	"testing"
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

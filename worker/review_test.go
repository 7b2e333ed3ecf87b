package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// stuckLimiter stands for a replica that waits for its rate-limit grant (the
// limiter is saturated) when it dies: it never grants, and says when a call is
// waiting.
type stuckLimiter struct{ entered chan string }

func (l *stuckLimiter) Wait(ctx context.Context, enterpriseID string, _ worker.Priority) error {
	select {
	case l.entered <- enterpriseID:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}
func (l *stuckLimiter) Throttled(string) {}

// groupNameProxy is a gateway in front of the sandbox that records, in arrival
// order, the first groupName of every dynamicGroup request it forwards (the
// commands of these tests name their groups after themselves), and the status
// the sandbox answered.
type groupNameProxy struct {
	mu   sync.Mutex
	seen []string
}

func (p *groupNameProxy) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, xylink.DynamicGroupPath) {
			return nil
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(raw))
		name, _ := resp.Request.Context().Value(groupNameKey{}).(string)
		answer := fmt.Sprint(resp.StatusCode)
		if i := bytes.Index(raw, []byte(`"errorCode":`)); i >= 0 {
			answer += " " + string(raw[i+len(`"errorCode":`):min(len(raw), i+len(`"errorCode":`)+5)])
		}
		p.mu.Lock()
		p.seen = append(p.seen, name+" → "+answer)
		p.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, xylink.DynamicGroupPath) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			name := ""
			if i := bytes.Index(body, []byte(`"groupName":"`)); i >= 0 {
				rest := body[i+len(`"groupName":"`):]
				if j := bytes.IndexByte(rest, '"'); j >= 0 {
					name = string(rest[:j])
				}
			}
			r = r.WithContext(context.WithValue(r.Context(), groupNameKey{}, name))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type groupNameKey struct{}

func (p *groupNameProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// namedCommand is a valid manual command whose one group is named after it.
func namedCommand(id, meeting string) []byte {
	return []byte(fmt.Sprintf(`{"commandId":%q,"meetingRoomNumber":%q,"mode":"manual","groupList":[{"groupName":%q,"memberList":[{"id":101990441,"type":5,"participantNumber":"18961782725"}]}]}`,
		id, meeting, id))
}

// Guarantee 2 (effectively once, 66684 reconciled only after an UNKNOWN
// outcome) and the event contract (a command's terminal event says what
// happened to it).
//
// begin (worker/pipeline.go, step 5) marks the call in flight before the
// rate-limit grant is waited for. A replica that dies while it waits for its
// grant (the limiter saturated) never sent anything, but its record keeps
// PendingUntil; when the command comes back after AckWait, the next replica's
// begin finds PendingUntil expired and sets MaybeCreated
// (worker/idempotency.go begin). Meanwhile another command of the same meeting
// opened the groups, so this command's one and only request is answered 66684,
// which is then "reconciled" as created: the command reports groups it never
// created (and the publisher's own failed.already_open is lost).
func TestReviewReplicaDeadInGrantWaitLeavesMaybeCreated(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var proxy groupNameProxy
	base := proxy.start(t, sb.URL)
	c, err := xylink.NewClient(base, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}))
	if err != nil {
		t.Fatal(err)
	}
	streams := worker.WithStreams(worker.StreamSettings{AckWait: 2 * time.Second})
	lease := worker.WithCallLease(3 * time.Second)

	// Replica 1 takes command A and waits for a grant that does not come.
	stuck := &stuckLimiter{entered: make(chan string, 1)}
	nc1 := wt.Connect(t, srv)
	wt.StartWorkerOn(t, nc1, c, worker.WithLimiter(stuck), streams, lease, worker.WithConcurrency(1))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "cmd-A", namedCommand("cmd-A", "910000000001"))
	select {
	case <-stuck.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("replica 1 never waited for a grant")
	}
	// It dies (its connection is gone: nothing it does any more reaches NATS).
	nc1.Close()

	// Command B of the same meeting is published and created by replica 2.
	wt.Publish(t, js, "cmd-B", namedCommand("cmd-B", "910000000001"))
	wt.StartWorker(t, srv, c, streams, lease)

	events := wt.AwaitTerminal(t, js, 2, 90*time.Second)
	reqs := proxy.requests()
	sentA := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, "cmd-A ") {
			sentA++
		}
	}
	a := events["cmd-A"]
	t.Logf("API requests in arrival order: %v", reqs)
	t.Logf("cmd-A events: %s %s", a[0].Subject, a[0].Data)
	if sentA == 1 && a[0].Subject == worker.SubjectCreated {
		t.Fatalf("command cmd-A reconciled as created though its only request (%d to the API) was answered 66684: "+
			"the groups are cmd-B's; the dead replica never sent cmd-A", sentA)
	}
}

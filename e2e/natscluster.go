package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSNode is one nats-server process with its own config, store, client port
// and cluster port. Stop, Kill and Start keep the config and the store.
type NATSNode struct {
	Name        string
	ClientPort  int
	ClusterPort int
	ConfPath    string
	StoreDir    string
	*Process
}

// URL is the node's client URL.
func (n *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort) }

// NATSCluster is a JetStream cluster of processes (or a single server). Routes
// between nodes go through one TCP proxy per ordered pair, so that a node can be
// cut off from the others.
type NATSCluster struct {
	Nodes  []*NATSNode
	routes map[[2]int]*TCPProxy // [from, to]
	tb     testing.TB
}

// StartNATSCluster starts n nodes (n == 1: a single server without routes) and
// waits until JetStream answers on every node.
func StartNATSCluster(tb testing.TB, bin string, dir string, n int) *NATSCluster {
	tb.Helper()
	c := &NATSCluster{routes: map[[2]int]*TCPProxy{}, tb: tb}
	for i := range n {
		node := &NATSNode{Name: fmt.Sprintf("n%d", i+1), ClientPort: FreePort(tb), StoreDir: filepath.Join(dir, fmt.Sprintf("n%d-store", i+1))}
		if n > 1 {
			node.ClusterPort = FreePort(tb)
		}
		c.Nodes = append(c.Nodes, node)
	}
	for i := range n {
		for j := range n {
			if i != j {
				c.routes[[2]int{i, j}] = NewTCPProxy(tb, fmt.Sprintf("127.0.0.1:%d", c.Nodes[j].ClusterPort))
			}
		}
	}
	for i, node := range c.Nodes {
		node.ConfPath = filepath.Join(dir, node.Name+".conf")
		if err := os.WriteFile(node.ConfPath, []byte(c.config(i)), 0o644); err != nil {
			tb.Fatal(err)
		}
		node.Process = NewProcess(tb, "nats-"+node.Name, bin, filepath.Join(dir, node.Name+".log"), baseEnv(), "-c", node.ConfPath)
		if err := node.Start(); err != nil {
			tb.Fatal(err)
		}
	}
	c.AwaitJetStream(60 * time.Second)
	return c
}

// config is node i's configuration. Short ping intervals let a node notice a
// blackholed peer or client within seconds, as production settings would within
// their own bounds.
func (c *NATSCluster) config(i int) string {
	node := c.Nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nping_interval: \"2s\"\nping_max: 3\n", node.Name, node.ClientPort)
	fmt.Fprintf(&b, "max_payload: 1MB\njetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 16GB\n}\n", node.StoreDir)
	if len(c.Nodes) > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: e2e\n  listen: 127.0.0.1:%d\n  no_advertise: true\n  ping_interval: \"1s\"\n  ping_max: 3\n  routes: [\n", node.ClusterPort)
		for j := range c.Nodes {
			if j != i {
				fmt.Fprintf(&b, "    nats-route://%s\n", c.routes[[2]int{i, j}].Addr())
			}
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String()
}

// URLs is the comma-separated client URLs of all nodes.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Connect opens a client connection to the cluster, closed at cleanup.
func (c *NATSCluster) Connect(name string) (*nats.Conn, jetstream.JetStream) {
	c.tb.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.NoCallbacksAfterClientClose())
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.tb.Fatal(err)
	}
	return nc, js
}

// AwaitJetStream waits until every running node answers a JetStream account
// info request.
func (c *NATSCluster) AwaitJetStream(d time.Duration) {
	c.tb.Helper()
	for _, node := range c.Nodes {
		if !node.Running() {
			continue
		}
		err := poll(d, 100*time.Millisecond, func() error {
			nc, err := nats.Connect(node.URL(), nats.Timeout(time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err
		})
		if err != nil {
			c.tb.Fatalf("%s: JetStream not ready after %v: %v", node.Name, d, err)
		}
	}
}

// StopNode stops node i cleanly (SIGTERM).
func (c *NATSCluster) StopNode(i int) { c.Nodes[i].Stop(15 * time.Second) }

// KillNode kills node i (SIGKILL).
func (c *NATSCluster) KillNode(i int) {
	c.Nodes[i].Signal(syscall.SIGKILL)
	c.Nodes[i].Wait(10 * time.Second)
}

// StartNode starts node i again with the same config and store.
func (c *NATSCluster) StartNode(i int) {
	c.tb.Helper()
	if err := c.Nodes[i].Start(); err != nil {
		c.tb.Fatal(err)
	}
}

// Isolate blackholes every route to and from node i.
func (c *NATSCluster) Isolate(i int) {
	for k, p := range c.routes {
		if k[0] == i || k[1] == i {
			p.Blackhole()
		}
	}
}

// Rejoin heals node i's routes.
func (c *NATSCluster) Rejoin(i int) {
	for k, p := range c.routes {
		if k[0] == i || k[1] == i {
			p.Heal()
		}
	}
}

// StreamLeader is the index of the node that leads a stream, or -1.
func (c *NATSCluster) StreamLeader(js jetstream.JetStream, stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return -1
	}
	for i, n := range c.Nodes {
		if n.Name == info.Cluster.Leader {
			return i
		}
	}
	return -1
}

// MoveLeadersOff asks every listed stream led by node i to elect another
// leader, and waits until none is led by it (or d passes). A scenario that
// cuts one stream's leader off uses it so that the other raft groups do not
// go with it: the majority side would otherwise wait for nats-server's
// re-elections of all of them (11-14 s measured) before anything moves.
func (c *NATSCluster) MoveLeadersOff(nc *nats.Conn, js jetstream.JetStream, i int, d time.Duration, streams ...string) []string {
	deadline := time.Now().Add(d)
	var stuck []string
	for _, st := range streams {
		for c.StreamLeader(js, st) == i {
			if time.Now().After(deadline) {
				stuck = append(stuck, st)
				break
			}
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+st, nil, 2*time.Second)
			time.Sleep(200 * time.Millisecond)
		}
	}
	return stuck
}

// UnexpectedExits lists nodes that exited without the suite asking.
func (c *NATSCluster) UnexpectedExits() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.UnexpectedExits()...)
	}
	return out
}

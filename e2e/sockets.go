package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketOwner finds which of pids holds the loopback TCP socket whose local
// address is addr (a client's side, as a server sees it in RemoteAddr). Linux
// only: it reads /proc/net/tcp and the processes' file descriptors.
func socketOwner(addr string, pids []int) (int, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, _ := strconv.Atoi(portStr)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	// The same local port may also stand in lines of closed connections
	// (TIME_WAIT, inode 0) that used it before: every live one is looked for.
	want := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[9] != "0" {
			want["socket:["+f[9]+"]"] = true
		}
	}
	if len(want) == 0 {
		return 0, fmt.Errorf("no socket with local address %s", addr)
	}
	for _, pid := range pids {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && want[l] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process of %v holds %s", pids, addr)
}

// clientsOf lists which of pids hold an established loopback TCP connection
// to port (a NATS node's client port, say). Linux only, as socketOwner.
func clientsOf(port int, pids []int) []int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil
	}
	remote := fmt.Sprintf("0100007F:%04X", port)
	want := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[2] == remote && f[3] == "01" && f[9] != "0" {
			want["socket:["+f[9]+"]"] = true
		}
	}
	var out []int
	for _, pid := range pids {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && want[l] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

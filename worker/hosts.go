package worker

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// HostAllowList is the Host values the HTTP server answers to beyond its
// health probes: loopback names, IP literals (DNS rebinding needs a name the
// attacker controls) and configured names. A web page whose name an
// attacker's DNS rebinds to this address is refused, so it cannot read the
// status page, a command's events or the metrics' enterprise ids.
type HostAllowList struct{ names map[string]bool }

// NewHostAllowList allows names (a reverse proxy's, a Service's) besides
// localhost and IP addresses; case, a port and a final dot are ignored.
func NewHostAllowList(names []string) *HostAllowList {
	l := &HostAllowList{names: map[string]bool{}}
	for _, n := range names {
		if n = hostName(n); n != "" {
			l.names[n] = true
		}
	}
	return l
}

// Allows reports whether a request's Host may be served.
func (l *HostAllowList) Allows(host string) bool {
	name := hostName(host)
	switch {
	case name == "":
		return false
	case name == "localhost", l != nil && l.names[name]:
		return true
	}
	_, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"))
	return err == nil
}

// Refuse answers a request whose Host is not allowed.
func (l *HostAllowList) Refuse(w http.ResponseWriter) {
	http.Error(w, "this host name is not served here: open it by its address or localhost, or add the name to --http-allowed-hosts (XYGROUP_HTTP_ALLOWED_HOSTS)", http.StatusMisdirectedRequest)
}

// hostName is a Host value's name, port and a final dot dropped, in lower case.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
}

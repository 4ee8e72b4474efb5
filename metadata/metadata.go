// Package metadata is the node-local metadata service: a small read-only
// HTTP/JSON API on a link-local address (169.254.169.250 by default, as
// Rancher's) that tells each container about itself — its address,
// gateway, MTU, host and network — so a container can learn its own
// configuration without credentials and without reaching the control
// plane. Rancher's metadata service answered the same question for
// Cattle's containers.
//
//	GET /v1/self          the caller's record, as JSON
//	GET /v1/self/FIELD    one field as text (address, gateway, mtu, host,
//	                      network, interface, mac, container_id,
//	                      pod_namespace, pod_name), for shell scripts:
//	                      wget -qO- http://169.254.169.250/v1/self/address
//
// Who is asking. The caller is identified by the source address of its TCP
// connection, and sees only the record of the container holding that
// address on this host; there is no way to name another. The source
// address is trustworthy because the layer-2 guard (package l2guard) binds
// every container port to its own address and MAC, the TCP handshake needs
// the reply to reach the sender, and the metadata address is unreachable
// from the LAN and never bridged (the guard's base chains). An address
// with no container on this host gets 404 and learns nothing else.
package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/ratelog"
)

// DefaultAddr is where the service listens unless configured: Rancher's
// metadata address, link-local (RFC 3927), port 80.
var DefaultAddr = netip.MustParseAddrPort("169.254.169.250:80")

// Record is what a container reads about itself.
type Record struct {
	Address      string `json:"address"` // with the prefix length the container has: 192.168.50.20/24
	Gateway      string `json:"gateway,omitempty"`
	MTU          int    `json:"mtu,omitempty"`
	Host         string `json:"host"` // the node's name
	Network      string `json:"network"`
	Interface    string `json:"interface"` // inside the container
	MAC          string `json:"mac"`
	ContainerID  string `json:"container_id"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
}

// field returns one field by its JSON name.
func (r Record) field(name string) (string, bool) {
	switch name {
	case "address":
		return r.Address, true
	case "gateway":
		return r.Gateway, true
	case "mtu":
		if r.MTU == 0 {
			return "", true
		}
		return strconv.Itoa(r.MTU), true
	case "host":
		return r.Host, true
	case "network":
		return r.Network, true
	case "interface":
		return r.Interface, true
	case "mac":
		return r.MAC, true
	case "container_id":
		return r.ContainerID, true
	case "pod_namespace":
		return r.PodNamespace, true
	case "pod_name":
		return r.PodName, true
	}
	return "", false
}

// Lookup returns the record of the local container holding ip.
type Lookup func(ip netip.Addr) (Record, bool)

// Handler serves the API for lookup. log gets one line per refused caller,
// rate-limited.
func Handler(lookup Lookup, log *slog.Logger) http.Handler {
	rlog := ratelog.New(log, time.Minute, 5)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only: GET only", http.StatusMethodNotAllowed)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/v1/self")
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			http.Error(w, "not found: GET /v1/self or /v1/self/FIELD", http.StatusNotFound)
			return
		}
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, "no record", http.StatusNotFound)
			return
		}
		ip := ap.Addr().Unmap()
		rec, ok := lookup(ip)
		if !ok {
			rlog.Info("metadata: no container holds the caller's address", "caller", ip)
			http.Error(w, fmt.Sprintf("no container on this host holds %v", ip), http.StatusNotFound)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		name := strings.Trim(rest, "/")
		if name == "" {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rec)
			return
		}
		v, ok := rec.field(name)
		if !ok {
			http.Error(w, fmt.Sprintf("no field %q", name), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, v)
	})
}

// Listen opens the service's TCP listener on addr. IP_FREEBIND lets it
// bind before the address exists on this host (the CNI plugin puts it on
// the bridge with the first container); connections arrive once it does.
func Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(ctx, "tcp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("metadata: listen on %v: %w", addr, err)
	}
	return ln, nil
}

// Server returns an http.Server for h with the limits a service every
// container can reach needs: small headers, short timeouts.
func Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
}

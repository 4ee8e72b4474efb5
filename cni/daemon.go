package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/drovernet/drover/cni/ipam"
)

// The plugin talks to the drover daemon over its control socket (HTTP on a
// unix socket, see cmd/drover/control.go):
//
//	GET    /v1/status     the node's tun_mtu, prefixes (its block) and addresses
//	POST   /v1/local      a local container address appeared (Local as JSON)
//	DELETE /v1/local/{ip} it is gone
//
// The last two let the router announce local addresses and answer ARP for
// them elsewhere. They are best effort: the IPAM directory is the truth, and
// a daemon that starts later (or lacks the endpoints: 404/405) reads it
// (Reserved). A daemon that answers 503 has no block yet (try again later);
// any other refusal fails the ADD.
const daemonTimeout = 3 * time.Second

// errNoDaemon means nothing answers on the control socket, or the daemon
// went away (or hung) in the middle of a request: either way it is not
// there to be told, and learns from the directory when it is back.
var errNoDaemon = errors.New("drover daemon not reachable")

// errDaemonNotReady is a 503: the daemon runs but cannot take the request
// yet (no block claimed).
var errDaemonNotReady = errors.New("drover daemon not ready")

// errNotImplemented means the daemon has no such endpoint.
var errNotImplemented = errors.New("endpoint not implemented by the daemon")

// daemonStatus is the part of router.Status the plugin uses. The field
// names are the daemon's JSON API.
type daemonStatus struct {
	Node   string `json:"node"`
	TUNMTU int    `json:"tun_mtu"`
	// Prefixes are the node's blocks.
	Prefixes []string `json:"prefixes"`
	// Addresses are the TUN device's own: never handed to a container.
	Addresses []string `json:"addresses"`
	// BlockNote says why the node has no block yet (cluster mode).
	BlockNote string `json:"block_note"`
}

// block returns the node's first IPv4 prefix.
func (s *daemonStatus) block() (netip.Prefix, bool) {
	for _, p := range s.Prefixes {
		if pf, err := netip.ParsePrefix(p); err == nil && pf.Addr().Is4() {
			return pf.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// blocks returns every IPv4 prefix of the node.
func (s *daemonStatus) blocks() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.Prefixes {
		if pf, err := netip.ParsePrefix(p); err == nil && pf.Addr().Is4() {
			out = append(out, pf.Masked())
		}
	}
	return out
}

// addrs returns the TUN's IPv4 addresses.
func (s *daemonStatus) addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range s.Addresses {
		if p, err := netip.ParsePrefix(a); err == nil {
			a = p.Addr().String()
		}
		if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
			out = append(out, ip)
		}
	}
	return out
}

// Local is the body of POST /v1/local: a container address on this host.
// Field names are part of the control API: only add fields.
type Local struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
	IP          string `json:"ip"`
	MAC         string `json:"mac"`
	Bridge      string `json:"bridge"`
	// DataDir is ipam.dataDir, where the network's reservation directory
	// lives: the daemon rereads it after a restart (Reserved).
	DataDir string `json:"data_dir,omitempty"`
	// PodNamespace and PodName: the Kubernetes pod holding the address
	// (CNI_ARGS K8S_POD_NAMESPACE, K8S_POD_NAME); empty outside Kubernetes.
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	// Labels select the attachment in network policies off Kubernetes
	// (docs/policy.md).
	Labels map[string]string `json:"labels,omitempty"`
	// Ports are the container's named ports, for policies off
	// Kubernetes.
	Ports []ipam.NamedPort `json:"ports,omitempty"`
	// PrefixLen, Gateway and MTU are the container's network, as its
	// metadata record gives them.
	PrefixLen int    `json:"prefix_len,omitempty"`
	Gateway   string `json:"gateway,omitempty"`
	MTU       int    `json:"mtu,omitempty"`
	// Uplink is the NIC of an uplink-model attachment (docs/cni.md): its
	// address is the LAN's, in no block of the node, and never routed.
	Uplink string `json:"uplink,omitempty"`
}

// CheckPod reports what is wrong with l's pod fields, as podFromArgs
// checks them ("" if nothing): the daemon applies the same rule to
// notices.
func (l Local) CheckPod() string {
	switch {
	case (l.PodNamespace == "") != (l.PodName == ""):
		return "pod_namespace and pod_name come together"
	case l.PodNamespace != "" && !dnsName(l.PodNamespace, maxPodNamespace, false):
		return fmt.Sprintf("pod_namespace %q is not a DNS label", clip([]byte(l.PodNamespace)))
	case l.PodName != "" && !dnsName(l.PodName, maxPodName, true):
		return fmt.Sprintf("pod_name %q is not a DNS subdomain", clip([]byte(l.PodName)))
	}
	if err := checkLabels(l.Labels); err != nil {
		return "labels: " + err.Error()
	}
	return ""
}

type daemonClient struct {
	sock string
	http http.Client
}

func newDaemonClient(sock string) *daemonClient {
	return &daemonClient{sock: sock, http: http.Client{
		Timeout: daemonTimeout,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}}
}

func (d *daemonClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://drover"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w at %s: %v", errNoDaemon, d.sock, op.Err)
		}
		// Accepted, then reset or timed out: the daemon died or hangs.
		return nil, fmt.Errorf("%w at %s: %s %s: %v", errNoDaemon, d.sock, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("daemon at %s: %s %s: %w", d.sock, method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return nil, fmt.Errorf("%s %s: %w", method, path, errNotImplemented)
	case resp.StatusCode == http.StatusServiceUnavailable:
		return nil, fmt.Errorf("%w at %s: %s %s: %s", errDaemonNotReady, d.sock, method, path, strings.TrimSpace(string(b)))
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("daemon at %s: %s %s: %s: %s", d.sock, method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// status fetches GET /v1/status.
func (d *daemonClient) status(ctx context.Context) (*daemonStatus, error) {
	b, err := d.do(ctx, http.MethodGet, "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	var st daemonStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("daemon at %s: bad /v1/status answer: %w", d.sock, err)
	}
	return &st, nil
}

// addLocal tells the daemon about a local container address.
func (d *daemonClient) addLocal(ctx context.Context, l Local) error {
	_, err := d.do(ctx, http.MethodPost, "/v1/local", l)
	return err
}

// delLocal tells the daemon a local container address is gone.
func (d *daemonClient) delLocal(ctx context.Context, ip netip.Addr) error {
	_, err := d.do(ctx, http.MethodDelete, "/v1/local/"+ip.String(), nil)
	return err
}

// chunkRequest is the body of POST /v1/chunk (cmd/drover/cluster.go): a
// network's LAN range, which hosts split into chunks (package lanpool).
type chunkRequest struct {
	Network   string `json:"network"`
	Start     string `json:"start"`
	End       string `json:"end"`
	ChunkSize int    `json:"chunk_size"`
}

// chunkWait bounds how long ADD waits for the daemon's chunk: a fresh
// claim settles in ClaimSettle (2 s with the lan timing).
const chunkWait = 15 * time.Second

// chunk asks the daemon for this host's chunk of a LAN range, waiting while
// it is being claimed. errNotImplemented: the daemon does not split ranges
// (static peers, or an older daemon).
func (d *daemonClient) chunk(ctx context.Context, r chunkRequest) (first, last netip.Addr, err error) {
	ctx, cancel := context.WithTimeout(ctx, chunkWait)
	defer cancel()
	for {
		b, err := d.do(ctx, http.MethodPost, "/v1/chunk", r)
		if err == nil {
			var v struct{ First, Last string }
			if err := json.Unmarshal(b, &v); err != nil {
				return netip.Addr{}, netip.Addr{}, fmt.Errorf("daemon at %s: bad /v1/chunk answer: %w", d.sock, err)
			}
			f, err1 := netip.ParseAddr(v.First)
			l, err2 := netip.ParseAddr(v.Last)
			if err := errors.Join(err1, err2); err != nil {
				return netip.Addr{}, netip.Addr{}, fmt.Errorf("daemon at %s: bad /v1/chunk answer: %w", d.sock, err)
			}
			return f, l, nil
		}
		if !errors.Is(err, errDaemonNotReady) {
			return netip.Addr{}, netip.Addr{}, err
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, netip.Addr{}, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Package config reads, defaults and validates drover's YAML configuration.
//
// A Config is a typed struct: every field has a yaml tag and a doc comment,
// Default fills what the operator left out, and Validate checks everything and
// resolves the string fields into typed values (the fields tagged `yaml:"-"`).
// Errors name the field by its path in the file ("peers[1].sa.out.key") so
// main can print them and exit with status 2. docs/config.md documents every key.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/vxlan"
)

// Encapsulations drover speaks on the underlay.
const (
	EncapESP   = "esp"
	EncapVXLAN = "vxlan"
)

// Timings are the values cluster.timing takes, the default first: the
// profiles of gossip.WithTiming (a test in cmd/drover keeps the two lists
// equal; this package does not import gossip and memberlist).
var Timings = []string{"lan", "fast", "edge"}

// Defaults, in one place so docs/config.md and the code agree.
const (
	DefaultTUN           = "drover0"
	DefaultBridge        = "drover-br0"
	DefaultESPPort       = 4500 // RFC 3948 §2
	DefaultCipher        = "aes-128-gcm"
	DefaultReplayWindow  = 1024
	DefaultControlSocket = "/run/drover/drover.sock"
	DefaultStateDir      = "/var/lib/drover"
	DefaultUnderlayMTU   = 1500
	MinReplayWindow      = 1024 // issue contract: at least 1024 packets
	DefaultGossipPort    = 7946
	DefaultClusterCIDR   = "10.42.0.0/16"
	DefaultBlockBits     = 24
	// derivedSPIMin: SPIs derived by the cluster have the top bit set
	// (crypto/pairkey.DerivedSPIMin), so manual ones never collide with them.
	derivedSPIMin   = 0x80000000
	MaxReplayWindow = 1 << 16
)

// DefaultHTTPListen is http.listen's default: loopback only, so neither
// the network nor a container reaches it. 9743 lies in Prometheus'
// exporter range and is the default of nothing that runs beside a CNI on
// a node: kubelet 10248/10250, kube-proxy 10249/10256,
// Calico Felix 9091/9099 and Typha 9093, Cilium 9962-9965, 9879 and
// 4240, Antrea 10349-10351, node-exporter 9100, Prometheus 9090.
const DefaultHTTPListen = "127.0.0.1:9743"

// Config is the whole file.
type Config struct {
	// Node describes this host.
	Node Node `yaml:"node"`
	// Encapsulation is "esp" (ESP-in-UDP, encrypted) or "vxlan" (plain VXLAN). Default esp.
	Encapsulation string `yaml:"encapsulation"`
	// Cipher is the ESP AEAD: aes-128-gcm (default), aes-256-gcm or chacha20-poly1305.
	Cipher string `yaml:"cipher"`
	// VNI is the VXLAN network identifier (24 bits). Default 1042, as Rancher's vtep1042.
	VNI uint32 `yaml:"vni"`
	// MTU is the underlay MTU. 0 reads it from the interface that holds
	// node.underlay, or uses 1500 when no interface holds it.
	MTU int `yaml:"mtu"`
	// TUNMTU overrides the TUN device's MTU. 0 (default) computes it: the
	// underlay MTU minus the real overhead of the encapsulation and underlay
	// family. Larger values are allowed; packets that then do not fit the
	// tunnel get ICMP "fragmentation needed"/"packet too big" (or, without DF,
	// are fragmented by the underlay).
	TUNMTU int `yaml:"tun_mtu"`
	// ControlSocket is the unix socket (mode 0600) serving status and
	// metrics. Default /run/drover/drover.sock; "none" disables it.
	ControlSocket string `yaml:"control_socket"`
	// HTTP is the TCP listener for health probes and Prometheus.
	HTTP HTTP `yaml:"http"`
	// StateDir keeps state across restarts: the outbound ESP sequence
	// number reservations, so a restarted host never reuses (key, seq).
	// Default /var/lib/drover.
	StateDir string `yaml:"state_dir"`
	// Log sets logging.
	Log Log `yaml:"log"`
	// Peers are the other hosts, statically configured.
	Peers []Peer `yaml:"peers"`
	// Cluster enables the gossip control plane: hosts find each other,
	// claim address blocks and derive ESP keys with nothing configured but
	// the cluster key and a seed. Absent: static peers only.
	Cluster *Cluster `yaml:"cluster"`
	// Firewall configures the nftables filter drover installs.
	Firewall Firewall `yaml:"firewall"`
	// Policy configures network policy (docs/policy.md).
	Policy Policy `yaml:"policy"`
	// Metadata configures the node-local metadata service.
	Metadata Metadata `yaml:"metadata"`
	// BGP announces this host's container prefixes to BGP neighbours
	// (docs/routing.md). Absent: no BGP.
	BGP *BGP `yaml:"bgp"`

	// Resolved by Validate.
	CipherID esp.Cipher `yaml:"-"`
}

// Cluster is the gossip control plane's configuration.
type Cluster struct {
	// KeyFile holds the cluster key (16, 24 or 32 bytes, hex or base64;
	// mode 0600). Gossip is encrypted and authenticated with it, and it is
	// mixed into every derived ESP key. Required.
	KeyFile string `yaml:"key_file"`
	// Join lists seed addresses ("host" or "host:port") of members to join
	// through; `drover run --join` adds to it. Empty: start a new cluster
	// (or wait to be joined).
	Join []string `yaml:"join"`
	// Port is the gossip port (TCP and UDP) on node.underlay. Default 7946.
	Port uint16 `yaml:"port"`
	// CIDR is the cluster network split into blocks. Default 10.42.0.0/16.
	CIDR string `yaml:"cidr"`
	// BlockBits is the prefix length of each host's block. Default 24.
	BlockBits int `yaml:"block_bits"`
	// RotationInterval is how often the ephemeral key (and so every derived
	// ESP key) is replaced. Default 1h; at least 2 × switch_delay.
	RotationInterval time.Duration `yaml:"rotation_interval"`
	// SwitchDelay is how long after its own rotation a host keeps sending
	// with the old keys, so peers learn the new public key first (longer
	// than gossip propagation). Default 5s.
	SwitchDelay time.Duration `yaml:"switch_delay"`
	// Grace is how long superseded inbound SAs stay installed for packets
	// in flight. Default 3 × switch_delay.
	Grace time.Duration `yaml:"grace"`
	// Timing selects the failure-detection and gossip timing profile (one
	// of Timings): "lan" (default, memberlist's LAN defaults), "fast" (dead
	// in about a second, for labs and tests; five times the probing
	// traffic) or "edge" (lossy, high-latency links and slow boards: slower
	// verdicts, fewest false suspicions). docs/config.md has each one's measured
	// detection times.
	Timing string `yaml:"timing"`
	// Bootstrap lets this host claim a block before it has met any other
	// member: the first host of a cluster. Without it a host that has
	// joined no one claims no block (it keeps one it already holds in
	// state_dir), so two hosts that have not met cannot hand out the same
	// addresses. Implied when Join is empty: a host with no seeds founds
	// the cluster.
	Bootstrap bool `yaml:"bootstrap"`
	// Direct routes container traffic to members on node.underlay's own
	// subnet without encapsulation: kernel routes "block via <member's
	// underlay address>", so the kernel forwards and drover is off the
	// data path. Only between hosts that both set it; members on other
	// subnets keep the encapsulation. Their container sources are
	// accepted on the underlay interface from the member's MAC only
	// (docs/routing.md). Default false.
	Direct bool `yaml:"direct"`
	// DirectTrusted says the underlay (the segment, and with bgp.import
	// the fabric) is trusted: required for direct and bgp.import with
	// encapsulation esp, since traffic between hosts then crosses it
	// unencrypted. Encryption is never dropped without it.
	DirectTrusted bool `yaml:"direct_trusted"`
	// Datastore is where hosts learn of each other: "gossip" (default:
	// memberlist among the hosts, join/port/timing/bootstrap apply) or
	// "kubernetes" (Node objects of the Kubernetes API, package kube;
	// docs/kubernetes.md).
	Datastore string `yaml:"datastore"`
	// Kubernetes configures the kubernetes datastore.
	Kubernetes Kubernetes `yaml:"kubernetes"`

	CIDRPrefix netip.Prefix `yaml:"-"`
}

// Datastores are the values cluster.datastore takes, the default first.
var Datastores = []string{DatastoreGossip, DatastoreKubernetes}

const (
	DatastoreGossip     = "gossip"
	DatastoreKubernetes = "kubernetes"
)

// Kubernetes configures the kubernetes datastore (cluster.kubernetes).
type Kubernetes struct {
	// Kubeconfig is the kubeconfig file to reach the API server with.
	// Empty: the pod's service account (in-cluster), as in the DaemonSet.
	Kubeconfig string `yaml:"kubeconfig"`
	// PodCIDR says where each host's block comes from: "node" (default:
	// its Node's spec.podCIDR, allocated by the controller-manager —
	// cluster.cidr and block_bits must then match its --cluster-cidr and
	// --node-cidr-mask-size) or "claim" (drover claims blocks as in gossip
	// mode and records them on the Nodes; for clusters whose
	// controller-manager allocates none).
	PodCIDR string `yaml:"pod_cidr"`
}

// IsKubernetes reports whether the cluster's datastore is Kubernetes.
func (c *Cluster) IsKubernetes() bool { return c != nil && c.Datastore == DatastoreKubernetes }

// MayClaimAlone reports whether this host may claim a block before it has
// met another member (Bootstrap, or no seeds to join).
func (c *Cluster) MayClaimAlone() bool { return c.Bootstrap || len(c.Join) == 0 }

// HTTP configures the TCP listener that serves GET /healthz, /readyz and
// /metrics (package internal/health), and nothing else.
type HTTP struct {
	// Listen is the address, IP:port (":port" for every address, as a
	// Kubernetes DaemonSet on the host network wants for its probes and
	// Prometheus). Default 127.0.0.1:9743; "" or "none" turns it off. A
	// pointer so that "" can be told from absent.
	Listen *string `yaml:"listen"`

	// ListenAddr is Listen validated; "" when off.
	ListenAddr string `yaml:"-"`
}

// DefaultMetadataListen is metadata.listen's default: Rancher's metadata
// address, which the CNI plugin puts on its bridges (metadataAddress).
const DefaultMetadataListen = "169.254.169.250:80"

// Metadata configures the node-local metadata service (package metadata,
// docs/cni.md): each local container reads its own record there.
type Metadata struct {
	// Listen is IPv4:port. Default 169.254.169.250:80; "" or "none" turns
	// it off. A pointer so that "" can be told from absent.
	Listen *string `yaml:"listen"`

	// ListenAddr is Listen validated; invalid when off.
	ListenAddr netip.AddrPort `yaml:"-"`
}

// Firewall configures drover's own nftables filter (package firewall,
// docs/security.md).
type Firewall struct {
	// Forward installs the forward filter (table inet drover_filter):
	// traffic to container addresses is forwarded only when it comes out
	// of the TUN, from the container bridge, or belongs to a connection
	// the host accepted (conntrack, portmap's DNAT); the rest is dropped
	// and counted. Default true; false leaves forwarding to the operator's
	// own firewall.
	Forward *bool `yaml:"forward"`
	// AllowFrom are sources outside the cluster that may open connections
	// to containers through the host (a routed fabric that learned the
	// blocks by BGP, say): the forward filter accepts them from any
	// interface. Default none: only replies and host ports reach
	// containers from outside.
	AllowFrom []string `yaml:"allow_from"`

	AllowFromList []netip.Prefix `yaml:"-"`
}

// BGP is the BGP speaker's configuration (package bgp).
type BGP struct {
	// AS is this host's AS number (1..4294967295): one per host (eBGP to
	// the fabric) or the fabric's (iBGP). Required.
	AS uint32 `yaml:"as"`
	// RouterID is the BGP identifier, an IPv4 address. Default:
	// node.underlay when it is IPv4.
	RouterID string `yaml:"router_id"`
	// ListenPort accepts sessions on node.underlay at this TCP port. 0
	// (default): only connect out, so nothing new listens on the host.
	ListenPort uint16 `yaml:"listen_port"`
	// GracefulRestart (RFC 4724): when the daemon stops, neighbours keep
	// its routes for RestartTime, so a restart does not withdraw the
	// fabric's routes to its containers. Default true.
	GracefulRestart *bool `yaml:"graceful_restart"`
	// RestartTime is how long neighbours keep the routes. Default 120s;
	// 1s..4095s.
	RestartTime time.Duration `yaml:"restart_time"`
	// HoldTime is the hold time proposed to neighbours. Default 90s.
	HoldTime time.Duration `yaml:"hold_time"`
	// Import reaches members on other subnets through the fabric (cluster
	// mode): a member whose blocks the neighbours announce, all through
	// one router on the underlay's subnets, is routed via that router
	// without encapsulation (path bgp; docs/routing.md). With
	// encapsulation esp it needs cluster.direct_trusted: the traffic
	// crosses the fabric unencrypted. Default false.
	Import bool `yaml:"import"`
	// Neighbors are the BGP peers. At least one.
	Neighbors []BGPNeighbor `yaml:"neighbors"`

	RouterIDAddr netip.Addr `yaml:"-"`
}

// GracefulRestartOn reports whether graceful restart is on.
func (b *BGP) GracefulRestartOn() bool { return b.GracefulRestart == nil || *b.GracefulRestart }

// BGPNeighbor is one BGP peer.
type BGPNeighbor struct {
	// Address is the neighbour's address. Required.
	Address string `yaml:"address"`
	// AS is the neighbour's AS number; the session is refused when the
	// neighbour's OPEN says another. Required.
	AS uint32 `yaml:"as"`
	// Port is the neighbour's TCP port. Default 179.
	Port uint16 `yaml:"port"`
	// PasswordFile holds the TCP MD5 key (RFC 2385) for the session, one
	// line, at most 80 bytes; mode 0600 or stricter. Empty: none.
	PasswordFile string `yaml:"password_file"`
	// Passive waits for the neighbour to connect (needs listen_port).
	Passive bool `yaml:"passive"`

	AddressAddr netip.Addr `yaml:"-"`
}

// ForwardOn reports whether the forward filter is to be installed.
func (f Firewall) ForwardOn() bool { return f.Forward == nil || *f.Forward }

// Policy configures network policy enforcement (docs/policy.md): table
// inet drover_policy, one chain per isolated identity.
type Policy struct {
	// File is a policy file: NetworkPolicy and Namespace objects in
	// Kubernetes YAML, reread every reload_interval. Empty: no policy
	// from a file (in Kubernetes mode the API server's policies apply).
	File string `yaml:"file"`
	// DefaultNamespace is the namespace of a policy or container that
	// names none. Default "default".
	DefaultNamespace string `yaml:"default_namespace"`
	// ReloadInterval is how often the file is checked for changes.
	// Default 1s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Kubernetes enforces the API server's NetworkPolicies (with Pods and
	// Namespaces from it) when cluster.datastore is kubernetes. Default
	// true there; false leaves policy to another component.
	Kubernetes *bool `yaml:"kubernetes"`
	// SharePort is the TCP port, on the overlay only, where a gossip-mode
	// host serves its pods to the others (policy selectors need every
	// host's pods). Default 7947.
	SharePort uint16 `yaml:"share_port"`
	// ProjectLabel turns on project isolation (Rancher's project network
	// isolation): pods carrying this label reach each other, across
	// namespaces and hosts, and nothing else reaches them unless a policy
	// says so. Empty: off.
	ProjectLabel string `yaml:"project_label"`
}

// PolicyFromKubernetes reports whether policies come from the API server.
func (c *Config) PolicyFromKubernetes() bool {
	return c.Cluster.IsKubernetes() && (c.Policy.Kubernetes == nil || *c.Policy.Kubernetes)
}

// PolicyOn reports whether network policy is enforced.
func (c *Config) PolicyOn() bool { return c.Policy.File != "" || c.PolicyFromKubernetes() }

// Log configures log/slog output on stderr.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
}

// Node is this host.
type Node struct {
	// Name identifies the host in logs and to peers. Default: the hostname.
	Name string `yaml:"name"`
	// Underlay is the address peers send to (IPv4 or IPv6). Required.
	Underlay string `yaml:"underlay"`
	// UnderlayWait is how long the daemon waits at start for an interface
	// to hold Underlay, before it sets anything up: in containerlab the
	// links and their addresses come after the daemon's process, and on
	// DHCP boards the lease after the unit. Default 0: no interface
	// holding it is a configuration error. At most 1h.
	UnderlayWait time.Duration `yaml:"underlay_wait"`
	// Port is the UDP port to listen on. Default 4500 for esp, 4789 for vxlan.
	Port uint16 `yaml:"port"`
	// TUN is the TUN device name. Default drover0.
	TUN string `yaml:"tun"`
	// MAC is the inner MAC of VXLAN frames sent by this host. Default:
	// 0e:00 followed by the last four bytes of the underlay address.
	MAC string `yaml:"mac"`
	// Prefixes are the container addresses behind this host. Required.
	Prefixes []string `yaml:"prefixes"`
	// Bridge is the container bridge the CNI plugin attaches containers to.
	// drover answers ARP on it for addresses that live remote peers own, so
	// containers that hold the whole cluster CIDR as on-link (the flat
	// model) reach other hosts. Default drover-br0 (the plugin's default);
	// "none" turns the ARP responder off.
	Bridge string `yaml:"bridge"`
	// Address is the TUN device's own address: the source of the ICMP
	// errors drover sends and of packets the host itself sends through the
	// tunnel. Default: the first host address of the first IPv4 prefix (and
	// of the first IPv6 prefix).
	Address []string `yaml:"address"`

	UnderlayAddr netip.Addr     `yaml:"-"`
	MACAddr      packet.MAC     `yaml:"-"`
	PrefixList   []netip.Prefix `yaml:"-"`
	AddressList  []netip.Addr   `yaml:"-"`
}

// Peer is another host.
type Peer struct {
	// Name identifies the peer in logs and counters. Required, unique.
	Name string `yaml:"name"`
	// Underlay is the peer's underlay address. Required.
	Underlay string `yaml:"underlay"`
	// Port is the peer's UDP port. Default: as node.port's default.
	Port uint16 `yaml:"port"`
	// MAC is the peer's inner MAC (vxlan). Default derived from its underlay
	// address as for node.mac.
	MAC string `yaml:"mac"`
	// Prefixes are the container addresses behind the peer. Packets to them
	// go to this peer; packets from the peer must come from them.
	Prefixes []string `yaml:"prefixes"`
	// SA is the manual ESP keying (esp only; required there).
	SA *SAPair `yaml:"sa"`

	UnderlayAddr netip.Addr     `yaml:"-"`
	MACAddr      packet.MAC     `yaml:"-"`
	PrefixList   []netip.Prefix `yaml:"-"`
}

// SAPair is the manual keying of one peer, as `ip xfrm state` takes it.
type SAPair struct {
	// Out is the SA this host sends with (the peer's inbound SA).
	Out SA `yaml:"out"`
	// In is the SA this host receives with (the peer's outbound SA).
	In SA `yaml:"in"`
	// ESN enables 64-bit extended sequence numbers (RFC 4303 §2.2.1).
	ESN bool `yaml:"esn"`
	// ReplayWindow is the anti-replay window in packets (RFC 4303 §3.4.3).
	// Default 1024; 1024..65536.
	ReplayWindow int `yaml:"replay_window"`
}

// SA is one direction.
type SA struct {
	// SPI is the security parameter index, >= 256 (RFC 4303 §2.1: 1-255 reserved).
	SPI uint32 `yaml:"spi"`
	// Key is the key material in hex: key bytes followed by the 4-byte salt,
	// the kernel's layout (20 bytes for aes-128-gcm, 36 for the others).
	Key string `yaml:"key"`

	KeyBytes []byte `yaml:"-"`
}

// FieldError is a configuration error tied to one field.
type FieldError struct {
	Path string // e.g. "peers[2].sa.out.spi"
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ErrInvalid marks every configuration error (errors.Is), so main can map
// any of them to exit status 2.
var ErrInvalid = errors.New("invalid configuration")

// Errors is the list of every problem found; it unwraps to each FieldError
// and to ErrInvalid.
type Errors []*FieldError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is/As see ErrInvalid and each FieldError.
func (es Errors) Unwrap() []error {
	out := make([]error, 0, len(es)+1)
	out = append(out, ErrInvalid)
	for _, e := range es {
		out = append(out, e)
	}
	return out
}

// Load reads, defaults and validates the file at path. A file that holds
// manual ESP keys (peers[].sa) must not be accessible to group or others
// (mode 0600 or stricter), as the cluster key file must not: the keys decrypt
// and forge the tunnel's traffic.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if k := c.keyField(); k != "" {
			return nil, Errors{{Path: "(file)", Msg: fmt.Sprintf("mode %04o lets group or others access it, and it holds manual ESP keys (%s): want 0600 or stricter (chmod 600 %s)", perm, k, path)}}
		}
	}
	return c, nil
}

// keyField names the first field holding key material, or "".
func (c *Config) keyField() string {
	for i, p := range c.Peers {
		if p.SA != nil && (p.SA.Out.Key != "" || p.SA.In.Key != "") {
			return fmt.Sprintf("peers[%d].sa", i)
		}
	}
	return ""
}

// Parse reads YAML from r; unknown keys are errors (a misspelt key would
// otherwise silently fall back to a default).
func Parse(r io.Reader) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{Path: "(file)", Msg: "empty configuration"}}
		}
		return nil, yamlErrors(err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// unknownField matches yaml.v3's message for a key that is not in the struct.
var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)

// yamlErrors turns a decode error into field errors: an unknown key is
// named as such, with its line; anything else (bad syntax, a string where a
// number belongs) keeps yaml's own message, which carries the line.
func yamlErrors(err error) Errors {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return Errors{{Path: "(yaml)", Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var es Errors
	for _, msg := range te.Errors {
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			es = append(es, &FieldError{Path: m[2], Msg: "unknown key (line " + m[1] + ")"})
			continue
		}
		es = append(es, &FieldError{Path: "(yaml)", Msg: msg})
	}
	return es
}

// Marshal renders c as YAML (used by testenv and `drover lab`).
func (c *Config) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return b.Bytes(), nil
}

// Default fills in every unset field that has a default.
func (c *Config) Default() {
	if c.Encapsulation == "" {
		c.Encapsulation = EncapESP
	}
	if c.Cipher == "" {
		c.Cipher = DefaultCipher
	}
	if c.VNI == 0 {
		c.VNI = vxlan.DefaultVNI
	}
	if c.ControlSocket == "" {
		c.ControlSocket = DefaultControlSocket
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.HTTP.Listen == nil {
		l := DefaultHTTPListen
		c.HTTP.Listen = &l
	}
	if c.Metadata.Listen == nil {
		l := DefaultMetadataListen
		c.Metadata.Listen = &l
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Firewall.Forward == nil {
		on := true
		c.Firewall.Forward = &on
	}
	if c.Policy.DefaultNamespace == "" {
		c.Policy.DefaultNamespace = "default"
	}
	if c.Policy.ReloadInterval == 0 {
		c.Policy.ReloadInterval = time.Second
	}
	if c.Policy.SharePort == 0 {
		c.Policy.SharePort = 7947
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Cluster.IsKubernetes() {
		// The DaemonSet passes both from the downward API
		// (spec.nodeName, status.hostIP).
		if c.Node.Name == "" {
			c.Node.Name = os.Getenv("NODE_NAME")
		}
		if c.Node.Underlay == "" {
			c.Node.Underlay = os.Getenv("NODE_IP")
		}
	}
	if c.Node.Name == "" {
		c.Node.Name, _ = os.Hostname()
	}
	if c.Node.TUN == "" {
		c.Node.TUN = DefaultTUN
	}
	if c.Node.Bridge == "" {
		c.Node.Bridge = DefaultBridge
	}
	if c.Node.Port == 0 {
		c.Node.Port = c.defaultPort()
	}
	if cl := c.Cluster; cl != nil {
		if cl.Port == 0 {
			cl.Port = DefaultGossipPort
		}
		if cl.CIDR == "" {
			cl.CIDR = DefaultClusterCIDR
		}
		if cl.BlockBits == 0 {
			cl.BlockBits = DefaultBlockBits
		}
		if cl.RotationInterval == 0 {
			cl.RotationInterval = time.Hour
		}
		if cl.SwitchDelay == 0 {
			cl.SwitchDelay = 5 * time.Second
		}
		if cl.Grace == 0 {
			cl.Grace = 3 * cl.SwitchDelay
		}
		if cl.Timing == "" {
			cl.Timing = Timings[0]
		}
		if cl.Datastore == "" {
			cl.Datastore = Datastores[0]
		}
		if cl.Kubernetes.PodCIDR == "" {
			cl.Kubernetes.PodCIDR = "node"
		}
	}
	for i := range c.Peers {
		p := &c.Peers[i]
		if p.Port == 0 {
			p.Port = c.defaultPort()
		}
		if p.SA != nil && p.SA.ReplayWindow == 0 {
			p.SA.ReplayWindow = DefaultReplayWindow
		}
	}
}

func (c *Config) defaultPort() uint16 {
	if c.Encapsulation == EncapVXLAN {
		return vxlan.DefaultPort
	}
	return DefaultESPPort
}

// Validate checks every field, resolves the typed fields and returns all
// problems at once (an Errors), or nil.
func (c *Config) Validate() error {
	var es Errors
	add := func(path, format string, args ...any) {
		es = append(es, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}

	switch c.Encapsulation {
	case EncapESP, EncapVXLAN:
	default:
		add("encapsulation", "%q is not one of esp, vxlan", c.Encapsulation)
	}
	if id, err := esp.ParseCipher(c.Cipher); err != nil {
		add("cipher", "%q is not one of aes-128-gcm, aes-256-gcm, chacha20-poly1305", c.Cipher)
	} else {
		c.CipherID = id
	}
	if c.PolicyOn() && c.ControlSocket == "none" {
		add("control_socket", "network policy needs the control socket: the CNI plugin's notices tell the daemon which pods are local (policy.file, or policy.kubernetes in Kubernetes mode)")
	}
	if c.Policy.File != "" && c.PolicyFromKubernetes() {
		add("policy.file", "policies come from the API server in Kubernetes mode; set policy.kubernetes: false to use a file instead")
	}
	if c.Policy.Kubernetes != nil && *c.Policy.Kubernetes && !c.Cluster.IsKubernetes() {
		add("policy.kubernetes", "needs cluster.datastore: kubernetes")
	}
	if c.Policy.File != "" && !filepath.IsAbs(c.Policy.File) {
		add("policy.file", "%q is not an absolute path", c.Policy.File)
	}
	if err := policyNamespaceErr(c.Policy.DefaultNamespace); err != "" {
		add("policy.default_namespace", "%s", err)
	}
	if c.Policy.ProjectLabel != "" {
		if err := policy.ValidLabelKey(c.Policy.ProjectLabel); err != nil {
			add("policy.project_label", "%v", err)
		}
		if !c.PolicyOn() {
			add("policy.project_label", "needs a policy source: policy.file, or Kubernetes mode")
		}
	}
	if c.Policy.ReloadInterval < 100*time.Millisecond || c.Policy.ReloadInterval > time.Hour {
		add("policy.reload_interval", "%v is outside 100ms..1h", c.Policy.ReloadInterval)
	}
	if c.VNI >= 1<<24 {
		add("vni", "%d does not fit in 24 bits (RFC 7348 §5)", c.VNI)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		add("mtu", "%d is outside 576..65535", c.MTU)
	}
	if c.TUNMTU != 0 && (c.TUNMTU < 576 || c.TUNMTU > 65535) {
		add("tun_mtu", "%d is outside 576..65535", c.TUNMTU)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of text, json", c.Log.Format)
	}

	c.HTTP.ListenAddr = c.validateHTTP(add)
	c.Metadata.ListenAddr = c.validateMetadata(add)
	for i, a := range c.Firewall.AllowFrom {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			add(fmt.Sprintf("firewall.allow_from[%d]", i), "%q is not a prefix (like 198.51.100.0/24)", a)
			continue
		}
		c.Firewall.AllowFromList = append(c.Firewall.AllowFromList, p.Masked())
	}
	c.validateBGP(add)

	n := &c.Node
	if n.Name == "" {
		add("node.name", "is required")
	}
	if a, err := netip.ParseAddr(n.Underlay); n.Underlay == "" && c.Cluster.IsKubernetes() {
		// Named below, with where else it may come from.
	} else if err != nil {
		add("node.underlay", "%q is not an IP address", n.Underlay)
	} else {
		n.UnderlayAddr = a.Unmap()
	}
	if n.UnderlayWait < 0 || n.UnderlayWait > time.Hour {
		add("node.underlay_wait", "%v is outside 0s..1h", n.UnderlayWait)
	}
	if n.TUN == "" || len(n.TUN) > 15 || strings.ContainsAny(n.TUN, "/ \t") {
		add("node.tun", "%q is not a valid interface name (1-15 characters, no '/' or space)", n.TUN)
	}
	if n.Bridge == "" || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ \t") {
		add("node.bridge", "%q is not a valid interface name (1-15 characters) or none", n.Bridge)
	}
	n.MACAddr = resolveMAC(add, "node.mac", n.MAC, n.UnderlayAddr)
	n.PrefixList = resolvePrefixes(add, "node.prefixes", n.Prefixes)
	if len(n.Prefixes) == 0 && c.Cluster == nil {
		add("node.prefixes", "at least one prefix is required (or a cluster section, to claim a block)")
	}
	n.AddressList = n.AddressList[:0]
	for i, s := range n.Address {
		a, err := netip.ParseAddr(s)
		if err != nil {
			add(fmt.Sprintf("node.address[%d]", i), "%q is not an IP address", s)
			continue
		}
		n.AddressList = append(n.AddressList, a.Unmap())
	}
	if len(n.Address) == 0 {
		n.AddressList = defaultAddresses(n.PrefixList)
	}

	names := map[string]int{}
	spis := map[uint32]string{}
	for i := range c.Peers {
		p := &c.Peers[i]
		path := fmt.Sprintf("peers[%d]", i)
		if p.Name == "" {
			add(path+".name", "is required")
		} else if j, dup := names[p.Name]; dup {
			add(path+".name", "%q is also the name of peers[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if a, err := netip.ParseAddr(p.Underlay); err != nil {
			add(path+".underlay", "%q is not an IP address", p.Underlay)
		} else {
			p.UnderlayAddr = a.Unmap()
			if p.UnderlayAddr == n.UnderlayAddr {
				add(path+".underlay", "%s is this node's own underlay address", a)
			} else if n.UnderlayAddr.IsValid() && p.UnderlayAddr.Is4() != n.UnderlayAddr.Is4() {
				add(path+".underlay", "%s is not of node.underlay's address family (one socket, one family)", a)
			}
		}
		p.MACAddr = resolveMAC(add, path+".mac", p.MAC, p.UnderlayAddr)
		p.PrefixList = resolvePrefixes(add, path+".prefixes", p.Prefixes)
		if len(p.Prefixes) == 0 {
			add(path+".prefixes", "at least one prefix is required")
		}
		if c.Encapsulation != EncapESP {
			if p.SA != nil {
				add(path+".sa", "is only used with encapsulation esp")
			}
			continue
		}
		if p.SA == nil {
			add(path+".sa", "is required with encapsulation esp (manual keying: out and in SPI and key)")
			continue
		}
		sa := p.SA
		if sa.ReplayWindow < MinReplayWindow || sa.ReplayWindow > MaxReplayWindow {
			add(path+".sa.replay_window", "%d is outside %d..%d", sa.ReplayWindow, MinReplayWindow, MaxReplayWindow)
		}
		for _, d := range []struct {
			name string
			sa   *SA
		}{{"out", &sa.Out}, {"in", &sa.In}} {
			dp := path + ".sa." + d.name
			if d.sa.SPI < 256 {
				add(dp+".spi", "%#x is reserved (must be >= 0x100, RFC 4303 §2.1)", d.sa.SPI)
			}
			if d.name == "in" && d.sa.SPI >= 256 {
				if o, dup := spis[d.sa.SPI]; dup {
					add(dp+".spi", "%#08x is also the inbound SPI of %s", d.sa.SPI, o)
				} else {
					spis[d.sa.SPI] = path
				}
			}
			key, err := ParseHex(d.sa.Key)
			switch {
			case err != nil:
				add(dp+".key", "not hex: %v", err)
			case c.CipherID != 0 && len(key) != c.CipherID.KeyLen():
				add(dp+".key", "%d bytes of key material, %s needs %d (key then 4-byte salt)", len(key), c.Cipher, c.CipherID.KeyLen())
			default:
				d.sa.KeyBytes = key
			}
		}
	}
	if cl := c.Cluster; cl != nil {
		if cl.KeyFile == "" {
			add("cluster.key_file", "is required (create one with: drover keygen > FILE; chmod 600 FILE)")
		}
		if p, err := netip.ParsePrefix(cl.CIDR); err != nil || p.Masked() != p {
			add("cluster.cidr", "%q is not a network prefix (like 10.42.0.0/16)", cl.CIDR)
		} else {
			cl.CIDRPrefix = p
			if cl.BlockBits < p.Bits() || cl.BlockBits > p.Addr().BitLen() || cl.BlockBits-p.Bits() > 16 {
				add("cluster.block_bits", "%d: want %d..%d, at most 65536 blocks", cl.BlockBits, p.Bits(), min(p.Addr().BitLen(), p.Bits()+16))
			}
		}
		if cl.SwitchDelay < 100*time.Millisecond {
			add("cluster.switch_delay", "%v is shorter than 100ms", cl.SwitchDelay)
		}
		if cl.Grace < cl.SwitchDelay {
			add("cluster.grace", "%v is shorter than switch_delay %v", cl.Grace, cl.SwitchDelay)
		}
		if cl.RotationInterval < 2*cl.SwitchDelay {
			add("cluster.rotation_interval", "%v is shorter than 2 × switch_delay (%v)", cl.RotationInterval, 2*cl.SwitchDelay)
		}
		if cl.Direct && c.Encapsulation == EncapESP && !cl.DirectTrusted {
			add("cluster.direct", "with encapsulation esp, traffic to members on this subnet would leave ESP and cross the underlay unencrypted; set cluster.direct_trusted: true if that segment is trusted")
		}
		if cl.DirectTrusted && !cl.Direct && (c.BGP == nil || !c.BGP.Import) {
			add("cluster.direct_trusted", "set, but neither cluster.direct nor bgp.import is")
		}
		if !slices.Contains(Timings, cl.Timing) {
			add("cluster.timing", "%q is not one of %s", cl.Timing, strings.Join(Timings, ", "))
		}
		for i, p := range c.Peers {
			if p.SA != nil && p.SA.In.SPI >= derivedSPIMin {
				add(fmt.Sprintf("peers[%d].sa.in.spi", i), "%#08x is in the range of SPIs the cluster derives (>= 0x80000000); manual SPIs must be below it", p.SA.In.SPI)
			}
		}
		if c.Node.Port == cl.Port && !cl.IsKubernetes() {
			add("cluster.port", "%d is also node.port (data plane)", cl.Port)
		}
		switch cl.Datastore {
		case DatastoreGossip:
		case DatastoreKubernetes:
			if len(cl.Join) > 0 {
				add("cluster.join", "not used with datastore kubernetes: hosts find each other through their Node objects")
			}
			if cl.Bootstrap {
				add("cluster.bootstrap", "not used with datastore kubernetes: the API server knows every claim")
			}
			if len(c.Node.Prefixes) > 0 {
				add("node.prefixes", "not used with datastore kubernetes: each host's block is its Node's podCIDR (pod_cidr: node) or claimed (pod_cidr: claim)")
			}
			if c.Node.Underlay == "" {
				add("node.underlay", "is required: set it, or NODE_IP in the environment (the DaemonSet sets it from status.hostIP)")
			}
		default:
			add("cluster.datastore", "%q is not one of %s", cl.Datastore, strings.Join(Datastores, ", "))
		}
		if pc := cl.Kubernetes.PodCIDR; pc != "node" && pc != "claim" {
			add("cluster.kubernetes.pod_cidr", "%q is not one of node, claim", pc)
		}
		if (cl.Kubernetes.Kubeconfig != "") && !cl.IsKubernetes() {
			add("cluster.kubernetes.kubeconfig", "set, but cluster.datastore is %s", cl.Datastore)
		}
	}
	c.checkPrefixes(add)
	if len(es) > 0 {
		return es
	}
	return nil
}

// validateBGP checks the bgp section and resolves its addresses.
func (c *Config) validateBGP(add func(string, string, ...any)) {
	b := c.BGP
	if b == nil {
		return
	}
	if b.AS == 0 {
		add("bgp.as", "is required (1..4294967295; AS 0 is reserved, RFC 7607)")
	}
	if b.RouterID == "" {
		if a, err := netip.ParseAddr(c.Node.Underlay); err == nil && a.Unmap().Is4() {
			b.RouterIDAddr = a.Unmap()
		} else {
			add("bgp.router_id", "is required when node.underlay is not an IPv4 address")
		}
	} else if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		add("bgp.router_id", "%q is not a non-zero IPv4 address (RFC 6286)", b.RouterID)
	} else {
		b.RouterIDAddr = a
	}
	if b.RestartTime == 0 {
		b.RestartTime = 120 * time.Second
	}
	if b.RestartTime < time.Second || b.RestartTime > 4095*time.Second {
		add("bgp.restart_time", "%v: want 1s..4095s (RFC 4724 §3)", b.RestartTime)
	}
	if b.HoldTime != 0 && (b.HoldTime < 3*time.Second || b.HoldTime > 65535*time.Second) {
		add("bgp.hold_time", "%v: want 3s..65535s (RFC 4271 §4.2)", b.HoldTime)
	}
	if len(b.Neighbors) == 0 {
		add("bgp.neighbors", "at least one neighbour is required")
	}
	if b.Import {
		switch {
		case c.Cluster == nil:
			add("bgp.import", "needs a cluster section: it reaches other members through the fabric")
		case c.Encapsulation == EncapESP && !c.Cluster.DirectTrusted:
			add("bgp.import", "with encapsulation esp, traffic to members reached through the fabric would leave ESP and cross it unencrypted; set cluster.direct_trusted: true if the fabric is trusted")
		}
	}
	seen := map[netip.Addr]int{}
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		path := fmt.Sprintf("bgp.neighbors[%d]", i)
		a, err := netip.ParseAddr(n.Address)
		switch {
		case err != nil:
			add(path+".address", "%q is not an IP address", n.Address)
		default:
			n.AddressAddr = a.Unmap()
			if j, dup := seen[n.AddressAddr]; dup {
				add(path+".address", "%s is also bgp.neighbors[%d]", a, j)
			}
			seen[n.AddressAddr] = i
		}
		if n.AS == 0 {
			add(path+".as", "is required (the neighbour's AS number)")
		}
		if n.Passive && b.ListenPort == 0 {
			add(path+".passive", "needs bgp.listen_port: a passive session waits for the neighbour to connect")
		}
	}
}

// validateHTTP checks http.listen and returns the address to listen on,
// "" when the listener is off.
func (c *Config) validateHTTP(add func(string, string, ...any)) string {
	if c.HTTP.Listen == nil {
		return ""
	}
	l := strings.TrimSpace(*c.HTTP.Listen)
	if l == "" || l == "none" {
		return ""
	}
	const want = "want IP:PORT, like 127.0.0.1:9743, or :PORT for every address; none turns it off"
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		add("http.listen", "%q: %s", l, want)
		return ""
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			add("http.listen", "%q: %s is not an IP address (%s)", l, host, want)
			return ""
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		add("http.listen", "%q: port %q is not 1..65535", l, port)
		return ""
	}
	if c.Cluster != nil && uint16(p) == c.Cluster.Port {
		add("http.listen", "port %d is also cluster.port (gossip listens on TCP there)", p)
		return ""
	}
	return l
}

// validateMetadata checks metadata.listen: a specific IPv4 address, since
// the service tells callers apart by their source address alone and must
// not be reachable on every address of the host.
func (c *Config) validateMetadata(add func(string, string, ...any)) netip.AddrPort {
	if c.Metadata.Listen == nil {
		return netip.AddrPort{}
	}
	l := strings.TrimSpace(*c.Metadata.Listen)
	if l == "" || l == "none" {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(l)
	switch {
	case err != nil:
		add("metadata.listen", "%q: want IPv4:PORT, like %s; none turns it off", l, DefaultMetadataListen)
	case !ap.Addr().Is4() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast():
		add("metadata.listen", "%q: want one unicast IPv4 address (the service tells containers apart by source address, so it must not listen everywhere)", l)
	case ap.Port() == 0:
		add("metadata.listen", "%q: port 0", l)
	default:
		return ap
	}
	return netip.AddrPort{}
}

func resolvePrefixes(add func(string, string, ...any), path string, in []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			add(fmt.Sprintf("%s[%d]", path, i), "%q is not a prefix (like 10.42.1.0/24)", s)
			continue
		}
		if p.Masked() != p {
			add(fmt.Sprintf("%s[%d]", path, i), "%s has host bits set (did you mean %s?)", s, p.Masked())
			continue
		}
		out = append(out, p)
	}
	return out
}

func resolveMAC(add func(string, string, ...any), path, s string, underlay netip.Addr) packet.MAC {
	if s == "" {
		return DeriveMAC(underlay)
	}
	m, err := packet.ParseMAC(s)
	if err != nil {
		add(path, "%q is not a MAC address", s)
		return m
	}
	if m[0]&1 != 0 {
		add(path, "%s is a multicast address", s)
	}
	return m
}

// DeriveMAC is the default inner MAC for an underlay address: 0e:00 (locally
// administered, unicast) then the address's last four bytes, so
// 192.0.2.1 → 0e:00:c0:00:02:01.
func DeriveMAC(a netip.Addr) packet.MAC {
	m := packet.MAC{0x0e, 0x00}
	if !a.IsValid() {
		return m
	}
	b := a.As16()
	copy(m[2:], b[12:])
	return m
}

// defaultAddresses picks the first host address of the first IPv4 and IPv6 prefix.
func defaultAddresses(ps []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	var have4, have6 bool
	for _, p := range ps {
		if p.Addr().Is4() && have4 || p.Addr().Is6() && have6 {
			continue
		}
		a := p.Addr()
		if p.Bits() < a.BitLen() {
			a = a.Next()
		}
		out = append(out, a)
		have4 = have4 || a.Is4()
		have6 = have6 || a.Is6()
	}
	return out
}

// ParseHex reads key material as ip-xfrm prints it: optional 0x, optional ':' or spaces.
func ParseHex(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	s = strings.NewReplacer(":", "", " ", "").Replace(s)
	if s == "" {
		return nil, errors.New("empty")
	}
	return hex.DecodeString(s)
}

// Overhead returns the bytes an encapsulated packet adds on an underlay of
// the given family, for the inner MTU computation. ESP depends on the inner
// size (padding), so it is done by TunnelMTU.
//
// TunnelMTU is the largest inner packet that crosses an underlay of
// underlayMTU bytes in one datagram.
func TunnelMTU(encap string, underlayMTU int, underlayIs6 bool) int {
	ipudp := 20 + 8
	if underlayIs6 {
		ipudp = 40 + 8
	}
	if encap == EncapVXLAN {
		return underlayMTU - ipudp - vxlan.HeaderLen - packet.EthHeaderLen
	}
	return esp.MaxInner(underlayMTU - ipudp)
}

// policyNamespaceErr checks a namespace name as Kubernetes does (an RFC
// 1123 label); "" if valid.
func policyNamespaceErr(ns string) string {
	if err := policy.ValidNamespace(ns); err != nil {
		return err.Error()
	}
	return ""
}

package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/lanpool"
)

// Defaults, in one place so docs/cni.md and the code agree.
const (
	DefaultBridge = "drover-br0"
	// DefaultUplinkBridge is the bridge of the uplink model: another one
	// than the overlay's, so both models live on one host.
	DefaultUplinkBridge = "drover-lan0"
	// DefaultMetadataAddress is the node-local metadata address
	// (package metadata), as Rancher's.
	DefaultMetadataAddress = "169.254.169.250"
	DefaultClusterCIDR     = "10.42.0.0/16"
	DefaultDaemonSocket    = "/run/drover/drover.sock" // config.DefaultControlSocket
	// IPAMType is the only ipam.type the plugin accepts (besides none).
	IPAMType = "drover"
	// MinMTU and MaxMTU bound "mtu", as the daemon bounds tun_mtu.
	MinMTU = 576
	MaxMTU = 65535
	// maxNameLen bounds the network name: it names a directory and goes
	// into NAT rule comments, whose user data the kernel caps at 256 bytes.
	maxNameLen = 128
)

// NetConf is the plugin configuration object (CNI spec §1) as the runtime
// passes it on stdin: the standard keys and drover's own. Unknown keys are
// errors (code 2): a misspelt key would otherwise fall back to a default
// silently.
type NetConf struct {
	// Standard keys (CNI spec 1.1 §1, §2).
	CNIVersion    string                `json:"cniVersion,omitempty"`
	Name          string                `json:"name"`
	Type          string                `json:"type"`
	Capabilities  map[string]bool       `json:"capabilities,omitempty"`
	DNS           types.DNS             `json:"dns,omitzero"`
	RawPrevResult map[string]any        `json:"prevResult,omitempty"`
	RuntimeConfig json.RawMessage       `json:"runtimeConfig,omitempty"`
	Args          json.RawMessage       `json:"args,omitempty"`
	Valid         *[]types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	ValidOld      *[]types.GCAttachment `json:"cni.dev/attachments,omitempty"` // libcni sends both (containernetworking/cni#1101)
	IPAM          IPAMConf              `json:"ipam,omitzero"`
	IPMasq        *bool                 `json:"ipMasq,omitempty"` // well-known key: same as hostNat

	// Bridge is the host bridge the containers' veths join; created if
	// missing. Default "drover-br0".
	Bridge string `json:"bridge,omitempty"`
	// BridgeSubnet is this host's container subnet, on the bridge: the
	// bridge gets its first host address (the gateway) and, unless
	// ipam.subnet says otherwise, containers get the others. Default: the
	// daemon's block (GET /v1/status "prefixes").
	BridgeSubnet string `json:"bridgeSubnet,omitempty"`
	// IsDefaultGateway gives containers a default route via the bridge's
	// address. Default true.
	IsDefaultGateway *bool `json:"isDefaultGateway,omitempty"`
	// HairpinMode lets a frame leave a bridge port it came in on, so a
	// container reaches itself through a host port mapping. Default false.
	HairpinMode bool `json:"hairpinMode,omitempty"`
	// HostNat masquerades traffic from containers to destinations outside
	// clusterCIDR (and the bridge subnet) behind the host's address.
	HostNat bool `json:"hostNat,omitempty"`
	// MTU of the veth pair. 0: the daemon's tun_mtu (underlay MTU minus the
	// encapsulation's real overhead).
	MTU int `json:"mtu,omitempty"`
	// ClusterCIDR is the whole container network across hosts. Default
	// 10.42.0.0/16.
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	// Flat gives the container's address the clusterCIDR prefix length,
	// so the whole cluster is on-link (Rancher's /16 model); the router
	// answers ARP for remote addresses. False: the address has the bridge
	// subnet's length and the cluster is reached via the gateway.
	Flat bool `json:"flat,omitempty"`
	// DaemonSocket is the drover daemon's control socket. Default
	// /run/drover/drover.sock.
	DaemonSocket string `json:"daemonSocket,omitempty"`
	// Uplink is a physical interface the bridge takes as a port: the
	// uplink model, containers with addresses of that LAN (docs/cni.md).
	Uplink string `json:"uplink,omitempty"`
	// Gateway is the LAN's router, the containers' default gateway in the
	// uplink model. Default: the host's default route's gateway on the
	// uplink.
	Gateway string `json:"gateway,omitempty"`
	// MetadataAddress is where containers reach the node-local metadata
	// service; "none" turns it off. Default 169.254.169.250.
	MetadataAddress string `json:"metadataAddress,omitempty"`
}

// IPAMConf is the "ipam" object. Only the built-in allocator exists.
type IPAMConf struct {
	// Type is "drover" or empty.
	Type string `json:"type,omitempty"`
	// Subnet to allocate from, inside bridgeSubnet. Default bridgeSubnet.
	Subnet string `json:"subnet,omitempty"`
	// RangeStart and RangeEnd narrow the allocation range (inclusive).
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	// DataDir holds one reservation directory per network. Default
	// /var/lib/cni/drover.
	DataDir string `json:"dataDir,omitempty"`
	// ChunkSize is how many addresses of the uplink model's range a host
	// claims at a time (package lanpool). Default 16.
	ChunkSize int `json:"chunkSize,omitempty"`
}

// config is a parsed, validated NetConf.
type config struct {
	NetConf
	bridgeSubnet netip.Prefix // invalid: learn from the daemon
	ipamSubnet   netip.Prefix // invalid: as the bridge subnet
	rangeStart   netip.Addr
	rangeEnd     netip.Addr
	cluster      netip.Prefix
	defaultGW    bool
	hostNat      bool
	dataDir      string
	prevResult   *types100.Result
	hostNatSet   bool       // "hostNat" present in the object
	gateway      netip.Addr // uplink model: the LAN's router (invalid: from the host's routes)
	metadata     netip.Addr // invalid: no metadata address
	// valid is the GC's list of still-valid attachments (none when the
	// runtime sent no list: libcni then means "nothing is valid").
	valid []types.GCAttachment
}

// standardKeys are the top-level keys of the CNI protocol and the
// well-known ones the plugin honours; every key starting with "cni.dev/" is
// reserved for the protocol and accepted too.
var standardKeys = []string{"cniVersion", "name", "type", "capabilities", "dns", "prevResult", "runtimeConfig", "args", "ipam", "ipMasq"}

var droverKeys = []string{"bridge", "bridgeSubnet", "isDefaultGateway", "hairpinMode", "hostNat", "mtu", "clusterCIDR", "flat", "daemonSocket",
	"uplink", "gateway", "metadataAddress"}

var ipamKeys = []string{"type", "subnet", "rangeStart", "rangeEnd", "dataDir", "chunkSize"}

// hints explain keys other plugins (Rancher's rancher-bridge, the
// reference bridge) know and drover does not.
var hints = map[string]string{
	"linkMTUOverhead": `drover learns the tunnel MTU from the daemon; set "mtu" to override it`,
	"isDebugLevel":    "drover logs to stderr, which the runtime collects",
	"logToFile":       "drover logs to stderr, which the runtime collects",
	"promiscMode":     `use "hairpinMode" for a container to reach itself through a mapped port`,
	"bridgeIP":        `the bridge always gets the first host address of "bridgeSubnet"`,
	"isGateway":       `the bridge always gets the gateway address; "isDefaultGateway" adds the default route`,
	"subnet":          `did you mean "bridgeSubnet" or "ipam.subnet"?`,
	"cniVersions":     `"cniVersions" belongs at the top of the conflist, not in a plugin`,
}

// parseConfig decodes and validates stdin. Every error is a CNI error whose
// message names the key: 6 for what is not JSON or has the wrong JSON type,
// 2 for an unknown key (with its value, as the spec asks), 7 for a bad value.
func parseConfig(b []byte) (*config, *types.Error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, decodeError("network config", err)
	}
	if top == nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not a JSON object", "")
	}
	if e := unknownKeys("", top, append(slices.Clone(standardKeys), droverKeys...)); e != nil {
		return nil, e
	}
	if raw, ok := top["ipam"]; ok && !isNull(raw) {
		var in map[string]json.RawMessage
		if err := json.Unmarshal(raw, &in); err != nil || in == nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("ipam: want an object, got %s", clip(raw)), "")
		}
		if e := unknownKeys("ipam.", in, ipamKeys); e != nil {
			return nil, e
		}
	}
	c := &config{}
	_, c.hostNatSet = top["hostNat"]
	if err := json.Unmarshal(b, &c.NetConf); err != nil {
		return nil, decodeError("network config", err)
	}
	if e := c.validate(); e != nil {
		return nil, e
	}
	return c, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func unknownKeys(prefix string, obj map[string]json.RawMessage, known []string) *types.Error {
	var unknown []string
	for k := range obj {
		if !slices.Contains(known, k) && !(prefix == "" && strings.HasPrefix(k, "cni.dev/")) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	k := unknown[0]
	msg := fmt.Sprintf("unknown key %q = %s in network config", prefix+k, clip(obj[k]))
	if len(unknown) > 1 {
		msg += fmt.Sprintf(" (and %d more: %s)", len(unknown)-1, strings.Join(unknown[1:], ", "))
	}
	details := hints[k]
	if details == "" {
		if s := closest(k, known); s != "" {
			details = fmt.Sprintf("did you mean %q?", prefix+s)
		}
	}
	if details == "" {
		details = "known keys: " + strings.Join(known, ", ")
	}
	return types.NewError(types.ErrUnsupportedField, msg, details)
}

// closest returns the known key nearest to k (case-insensitive edit
// distance at most 2), or "".
func closest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(strings.ToLower(k), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// clip renders a raw JSON value for a message, at most 60 bytes.
func clip(raw json.RawMessage) string {
	s := strings.Join(strings.Fields(string(raw)), " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// decodeError turns a JSON error into code 6, naming the key and the
// expected type where encoding/json knows them.
func decodeError(what string, err error) *types.Error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("%s: got a JSON %s, want %s", te.Field, te.Value, jsonKind(te.Type.Kind().String())), "")
	case errors.As(err, &se):
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("%s is not valid JSON: %v (at byte %d)", what, se, se.Offset), "")
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("%s: %v", what, err), "")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "uint", "uint32", "float64":
		return "a number"
	case "bool", "ptr": // *bool is the only pointer among the scalars
		return "true or false"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "map", "struct":
		return "an object"
	}
	return goKind
}

func invalid(key, format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, key+": "+fmt.Sprintf(format, args...), "")
}

func (c *config) validate() *types.Error {
	if c.Name == "" {
		return invalid("name", "missing: the network needs a name")
	}
	if len(c.Name) > maxNameLen {
		return invalid("name", "%d characters, at most %d", len(c.Name), maxNameLen)
	}
	if e := validNetworkName(c.Name); e != "" {
		return invalid("name", "%q %s", c.Name, e)
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
		if c.Uplink != "" {
			c.Bridge = DefaultUplinkBridge
		}
	}
	if e := c.validateUplink(); e != nil {
		return e
	}
	switch c.MetadataAddress {
	case "none":
	case "":
		c.metadata = netip.MustParseAddr(DefaultMetadataAddress)
	default:
		a, err := netip.ParseAddr(c.MetadataAddress)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return invalid("metadataAddress", "%q is not a unicast IPv4 address (default %s; \"none\" turns the metadata service off)", c.MetadataAddress, DefaultMetadataAddress)
		}
		c.metadata = a
	}
	if e := validIfName(c.Bridge); e != "" {
		return invalid("bridge", "%q %s", c.Bridge, e)
	}
	var e *types.Error
	if c.bridgeSubnet, e = parseSubnet("bridgeSubnet", c.BridgeSubnet); e != nil {
		return e
	}
	if c.ipamSubnet, e = parseSubnet("ipam.subnet", c.IPAM.Subnet); e != nil {
		return e
	}
	if c.bridgeSubnet.IsValid() && c.ipamSubnet.IsValid() && !within(c.ipamSubnet, c.bridgeSubnet) {
		return invalid("ipam.subnet", "%s is not inside bridgeSubnet %s", c.ipamSubnet, c.bridgeSubnet)
	}
	for _, r := range []struct {
		key string
		s   string
		a   *netip.Addr
	}{{"ipam.rangeStart", c.IPAM.RangeStart, &c.rangeStart}, {"ipam.rangeEnd", c.IPAM.RangeEnd, &c.rangeEnd}} {
		if r.s == "" {
			continue
		}
		a, err := netip.ParseAddr(r.s)
		if err != nil || !a.Is4() {
			return invalid(r.key, "%q is not an IPv4 address", r.s)
		}
		*r.a = a
	}
	if c.rangeStart.IsValid() && c.rangeEnd.IsValid() && c.rangeEnd.Less(c.rangeStart) {
		return invalid("ipam.rangeEnd", "%s is before rangeStart %s", c.rangeEnd, c.rangeStart)
	}
	if s := c.allocSubnet(netip.Prefix{}); s.IsValid() {
		if e := c.checkPool(s); e != nil {
			return e
		}
	}
	switch c.IPAM.Type {
	case "", IPAMType:
	default:
		return invalid("ipam.type", "%q is not supported: drover allocates from this host's block itself; use %q or leave ipam out", c.IPAM.Type, IPAMType)
	}
	c.dataDir = c.IPAM.DataDir
	if c.dataDir == "" {
		c.dataDir = ipam.DefaultDataDir
	}
	if !filepath.IsAbs(c.dataDir) {
		return invalid("ipam.dataDir", "%q is not an absolute path", c.dataDir)
	}
	// Clean: the daemon refuses a data_dir notice with "." or ".." elements.
	c.dataDir = filepath.Clean(c.dataDir)
	if c.ClusterCIDR == "" {
		c.ClusterCIDR = DefaultClusterCIDR
	}
	cl, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil || !cl.Addr().Is4() {
		return invalid("clusterCIDR", "%q is not an IPv4 prefix (like %s)", c.ClusterCIDR, DefaultClusterCIDR)
	}
	if cl != cl.Masked() {
		return invalid("clusterCIDR", "%s has host bits set (want %s)", cl, cl.Masked())
	}
	c.cluster = cl
	if c.Flat {
		for _, s := range []struct {
			key string
			p   netip.Prefix
		}{{"bridgeSubnet", c.bridgeSubnet}, {"ipam.subnet", c.ipamSubnet}} {
			if s.p.IsValid() && !within(s.p, cl) {
				return invalid(s.key, "%s is outside clusterCIDR %s: with flat, a container's address must be inside the on-link cluster prefix", s.p, cl)
			}
		}
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return invalid("mtu", "%d is outside %d..%d (0 or absent: learn it from the daemon)", c.MTU, MinMTU, MaxMTU)
	}
	if c.DaemonSocket == "" {
		c.DaemonSocket = DefaultDaemonSocket
	}
	if !filepath.IsAbs(c.DaemonSocket) {
		return invalid("daemonSocket", "%q is not an absolute path", c.DaemonSocket)
	}
	c.defaultGW = c.IsDefaultGateway == nil || *c.IsDefaultGateway
	c.hostNat = c.HostNat
	if c.IPMasq != nil {
		if c.hostNatSet && *c.IPMasq != c.HostNat {
			return invalid("ipMasq", "%v contradicts hostNat %v (they are the same switch)", *c.IPMasq, c.HostNat)
		}
		c.hostNat = *c.IPMasq
	}
	for i, ns := range c.DNS.Nameservers {
		if net.ParseIP(ns) == nil {
			return invalid(fmt.Sprintf("dns.nameservers[%d]", i), "%q is not an IP address", ns)
		}
	}
	if c.RawPrevResult != nil {
		pc := types.PluginConf{CNIVersion: c.CNIVersion, RawPrevResult: c.RawPrevResult}
		if err := version.ParsePrevResult(&pc); err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
		r, err := types100.NewResultFromResult(pc.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
		c.prevResult = r
	}
	switch {
	case c.Valid != nil:
		c.valid = *c.Valid
	case c.ValidOld != nil:
		c.valid = *c.ValidOld
	}
	return nil
}

// validateUplink checks the keys of the uplink model: the LAN's range is
// the operator's to give (the rest of the LAN belongs to its DHCP server
// and static devices), and the overlay models' keys do not apply.
func (c *config) validateUplink() *types.Error {
	if c.Gateway != "" {
		if c.Uplink == "" {
			return invalid("gateway", "only with uplink: in the overlay models the gateway is always the bridge's first host address")
		}
		a, err := netip.ParseAddr(c.Gateway)
		if err != nil || !a.Is4() {
			return invalid("gateway", "%q is not an IPv4 address", c.Gateway)
		}
		c.gateway = a
	}
	if c.Uplink == "" {
		if c.IPAM.ChunkSize != 0 {
			return invalid("ipam.chunkSize", "only with uplink: the overlay models take this host's whole block")
		}
		return nil
	}
	if e := validIfName(c.Uplink); e != "" {
		return invalid("uplink", "%q %s", c.Uplink, e)
	}
	if c.Uplink == c.Bridge {
		return invalid("uplink", "%q is also the bridge: name the physical interface the bridge takes as a port", c.Uplink)
	}
	for _, k := range []struct {
		key string
		set bool
	}{{"bridgeSubnet", c.BridgeSubnet != ""}, {"flat", c.Flat}, {"hostNat", c.HostNat}, {"ipMasq", c.IPMasq != nil && *c.IPMasq}, {"clusterCIDR", c.ClusterCIDR != ""}} {
		if k.set {
			return invalid(k.key, "not used with uplink: containers get addresses of the uplink's LAN, reached without NAT (ipam.subnet names the LAN if the host has no address on it)")
		}
	}
	if c.IPAM.RangeStart == "" || c.IPAM.RangeEnd == "" {
		return invalid("ipam.rangeStart", "with uplink, ipam.rangeStart and ipam.rangeEnd name the LAN addresses drover may hand out: the rest of the LAN belongs to its DHCP server and its static devices")
	}
	if c.IPAM.ChunkSize == 0 {
		c.IPAM.ChunkSize = lanpool.DefaultChunkSize
	}
	if c.IPAM.ChunkSize < 1 || c.IPAM.ChunkSize > 4096 {
		return invalid("ipam.chunkSize", "%d is outside 1..4096", c.IPAM.ChunkSize)
	}
	return nil
}

// allocSubnet is the subnet addresses come from: ipam.subnet, else
// bridgeSubnet, else block (the daemon's).
func (c *config) allocSubnet(block netip.Prefix) netip.Prefix {
	switch {
	case c.ipamSubnet.IsValid():
		return c.ipamSubnet
	case c.bridgeSubnet.IsValid():
		return c.bridgeSubnet
	}
	return block
}

// bridgeNet is the subnet on the bridge: bridgeSubnet, else ipam.subnet,
// else block.
func (c *config) bridgeNet(block netip.Prefix) netip.Prefix {
	switch {
	case c.bridgeSubnet.IsValid():
		return c.bridgeSubnet
	case c.ipamSubnet.IsValid():
		return c.ipamSubnet
	}
	return block
}

// checkPool checks the range keys against the allocation subnet.
func (c *config) checkPool(s netip.Prefix) *types.Error {
	p := ipam.Pool{Subnet: s, Start: c.rangeStart, End: c.rangeEnd}
	if err := p.Validate(); err != nil {
		key := "ipam"
		switch {
		case strings.Contains(err.Error(), "range start"):
			key = "ipam.rangeStart"
		case strings.Contains(err.Error(), "range end"):
			key = "ipam.rangeEnd"
		}
		return invalid(key, "%v", strings.TrimPrefix(err.Error(), "ipam: "))
	}
	return nil
}

// parseSubnet parses an optional IPv4 subnet key: canonical, /30 or larger.
func parseSubnet(key, s string) (netip.Prefix, *types.Error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, invalid(key, "%q is not an IPv4 prefix (like 10.42.1.0/24)", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, invalid(key, "%s has host bits set (want %s; the gateway is always the first host address)", p, p.Masked())
	}
	if p.Bits() > ipam.MaxBits {
		return netip.Prefix{}, invalid(key, "%s is too small: /%d at most (network, gateway, one container, broadcast)", p, ipam.MaxBits)
	}
	return p, nil
}

// within reports whether inner lies entirely inside outer.
func within(inner, outer netip.Prefix) bool {
	return inner.Bits() >= outer.Bits() && outer.Contains(inner.Addr())
}

// validIfName returns why name is not a valid Linux interface name, or "".
func validIfName(name string) string {
	switch {
	case name == "":
		return "is empty"
	case len(name) > 15:
		return "is longer than 15 characters"
	case name == "." || name == "..":
		return "is not a valid interface name"
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) {
			return "contains '/', ':' or white space"
		}
	}
	return ""
}

// validNetworkName applies the spec's rule (alphanumeric first, then
// alphanumerics, '_', '.', '-'): the name becomes a directory.
func validNetworkName(name string) string {
	for i, r := range name {
		alnum := r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))
		if !alnum && (i == 0 || !strings.ContainsRune("_.-", r)) {
			return "may only hold letters, digits, '_', '.' and '-', starting with a letter or digit"
		}
	}
	return ""
}

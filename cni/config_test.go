package cni

import (
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestConfigDefaults(t *testing.T) {
	c, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"drover"}`))
	if e != nil {
		t.Fatal(e)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"bridge", c.Bridge, DefaultBridge},
		{"clusterCIDR", c.cluster, netip.MustParsePrefix(DefaultClusterCIDR)},
		{"daemonSocket", c.DaemonSocket, DefaultDaemonSocket},
		{"dataDir", c.dataDir, "/var/lib/cni/drover"},
		{"isDefaultGateway", c.defaultGW, true},
		{"hostNat", c.hostNat, false},
		{"flat", c.Flat, false},
		{"hairpinMode", c.HairpinMode, false},
		{"mtu", c.MTU, 0},
		{"bridgeSubnet", c.bridgeSubnet.IsValid(), false},
		{"valid attachments", len(c.valid), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestConfigKeys(t *testing.T) {
	for _, tc := range []struct {
		name  string
		json  string
		check func(c *config) bool
	}{
		{"ipMasq is hostNat", `{"name":"n","ipMasq":true}`, func(c *config) bool { return c.hostNat }},
		{"ipMasq agrees with hostNat", `{"name":"n","ipMasq":true,"hostNat":true}`, func(c *config) bool { return c.hostNat }},
		{"isDefaultGateway false", `{"name":"n","isDefaultGateway":false}`, func(c *config) bool { return !c.defaultGW }},
		{"valid attachments", `{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
			func(c *config) bool { return len(c.valid) == 1 && c.valid[0].ContainerID == "a" }},
		{"old attachments key (libcni sends both)", `{"name":"n","cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]}`,
			func(c *config) bool { return len(c.valid) == 1 && c.valid[0].ContainerID == "b" }},
		{"other cni.dev/ keys are reserved, accepted", `{"name":"n","cni.dev/future":1}`, func(*config) bool { return true }},
		{"runtime keys", `{"name":"n","runtimeConfig":{"portMappings":[]},"args":{"cni":{}},"capabilities":{"x":true}}`, func(*config) bool { return true }},
		{"subnets and range", `{"name":"n","bridgeSubnet":"10.42.1.0/24","ipam":{"subnet":"10.42.1.128/25","rangeStart":"10.42.1.130","rangeEnd":"10.42.1.140"}}`,
			func(c *config) bool {
				return c.allocSubnet(netip.Prefix{}) == netip.MustParsePrefix("10.42.1.128/25") &&
					c.bridgeNet(netip.Prefix{}) == netip.MustParsePrefix("10.42.1.0/24")
			}},
		{"ipam.subnet alone is the bridge subnet too", `{"name":"n","ipam":{"subnet":"10.42.1.0/24"}}`,
			func(c *config) bool { return c.bridgeNet(netip.Prefix{}) == netip.MustParsePrefix("10.42.1.0/24") }},
		{"null ipam", `{"name":"n","ipam":null}`, func(c *config) bool { return c.IPAM.Type == "" }},
		{"metadata address by default", `{"name":"n"}`, func(c *config) bool { return c.metadata == netip.MustParseAddr(DefaultMetadataAddress) }},
		{"metadata address off", `{"name":"n","metadataAddress":"none"}`, func(c *config) bool { return !c.metadata.IsValid() && c.metadataAddrs() == nil }},
		{"metadata address moved", `{"name":"n","metadataAddress":"169.254.1.1"}`, func(c *config) bool { return c.metadata == netip.MustParseAddr("169.254.1.1") }},
		{"uplink: its own bridge by default", `{"name":"n","uplink":"eth1","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`,
			func(c *config) bool { return c.Bridge == DefaultUplinkBridge && c.Uplink == "eth1" }},
		{"uplink with gateway and subnet", `{"name":"n","uplink":"eth1","gateway":"192.168.1.254","ipam":{"subnet":"192.168.1.0/24","rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`,
			func(c *config) bool {
				return c.gateway == netip.MustParseAddr("192.168.1.254") && c.ipamSubnet.String() == "192.168.1.0/24"
			}},
		{"dns", `{"name":"n","dns":{"nameservers":["10.43.0.10"],"search":["svc.local"]}}`,
			func(c *config) bool { return c.DNS.Nameservers[0] == "10.43.0.10" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, e := parseConfig([]byte(tc.json))
			if e != nil {
				t.Fatalf("got %v, want valid", e)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected config %+v", c)
			}
		})
	}
}

// Without a subprocess: the same parser the table test exercises, for the
// errors that need neither root nor skel.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		json string
		code uint
		msg  string
	}{
		{``, types.ErrDecodingFailure, "not valid JSON"},
		{`null`, types.ErrDecodingFailure, "not a JSON object"},
		{`{"name":"n"`, types.ErrDecodingFailure, "not valid JSON"},
		{`{}`, types.ErrInvalidNetworkConfig, "name: missing"},
		{`{"name":"x/y"}`, types.ErrInvalidNetworkConfig, "name: \"x/y\" may only hold"},
		{`{"name":"n","Bridge":"x"}`, types.ErrUnsupportedField, `unknown key "Bridge"`},
		{`{"name":"n","ipam":{"Type":"drover"}}`, types.ErrUnsupportedField, `unknown key "ipam.Type"`},
		{`{"name":"n","mtu":1.5}`, types.ErrDecodingFailure, "mtu: got a JSON number 1.5, want a number"},
		{`{"name":"n","prevResult":5}`, types.ErrDecodingFailure, "prevResult: got a JSON number"},
		{`{"name":"n","metadataAddress":"fd00::1"}`, types.ErrInvalidNetworkConfig, `metadataAddress: "fd00::1" is not a unicast IPv4 address`},
		{`{"name":"n","metadataAddress":"224.0.0.1"}`, types.ErrInvalidNetworkConfig, `metadataAddress: "224.0.0.1" is not a unicast IPv4 address`},
		{`{"name":"n","gateway":"10.42.1.1"}`, types.ErrInvalidNetworkConfig, "gateway: only with uplink"},
		{`{"name":"n","uplink":"eth1"}`, types.ErrInvalidNetworkConfig, "ipam.rangeStart: with uplink, ipam.rangeStart and ipam.rangeEnd name the LAN addresses"},
		{`{"name":"n","uplink":"eth1/x","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, `uplink: "eth1/x" contains`},
		{`{"name":"n","uplink":"br0","bridge":"br0","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, `uplink: "br0" is also the bridge`},
		{`{"name":"n","uplink":"eth1","flat":true,"ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, "flat: not used with uplink"},
		{`{"name":"n","uplink":"eth1","hostNat":true,"ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, "hostNat: not used with uplink"},
		{`{"name":"n","uplink":"eth1","bridgeSubnet":"192.168.1.0/24","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, "bridgeSubnet: not used with uplink"},
		{`{"name":"n","uplink":"eth1","gateway":"x","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199"}}`, types.ErrInvalidNetworkConfig, `gateway: "x" is not an IPv4 address`},
		{`{"name":"n","uplink":"eth1","ipam":{"rangeStart":"192.168.1.100","rangeEnd":"192.168.1.199","chunkSize":5000}}`, types.ErrInvalidNetworkConfig, "ipam.chunkSize: 5000 is outside 1..4096"},
		{`{"name":"n","ipam":{"chunkSize":8}}`, types.ErrInvalidNetworkConfig, "ipam.chunkSize: only with uplink"},
	} {
		_, e := parseConfig([]byte(tc.json))
		wantCNIError(t, e, tc.code, tc.msg)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"bridge", "brige", 1}, {"hostnat", "hostNat", 1}, {"mtu", "mut", 2}, {"abc", "", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("%q→%q: got %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
	if got := closest("hostnat", droverKeys); got != "hostNat" {
		t.Errorf("closest(hostnat): got %q", got)
	}
	if got := closest("zzzzzz", droverKeys); got != "" {
		t.Errorf("closest(zzzzzz): got %q, want none", got)
	}
}

// FuzzParseConfig: stdin is the runtime's, and a broken config must come
// back as a CNI error of the config codes, never a panic; a config that
// parses must parse again to the same values from its own JSON.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"drover"}`,
		`{"name":"n","bridge":"br0","bridgeSubnet":"10.42.1.0/24","mtu":1400,"flat":true,"hostNat":true,"ipam":{"type":"drover","rangeStart":"10.42.1.10","rangeEnd":"10.42.1.20"}}`,
		`{"name":"n","ipMasq":true,"dns":{"nameservers":["10.0.0.1"]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"name":"n","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.42.1.5/24","interface":0}]}}`,
		`{"name":"n","brige":1}`, `{"name":"n","mtu":"x"}`, `{`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, e := parseConfig(b)
		if e != nil {
			switch e.Code {
			case types.ErrUnsupportedField, types.ErrDecodingFailure, types.ErrInvalidNetworkConfig:
			default:
				t.Fatalf("%q: code %d (%v), want 2, 6 or 7", b, e.Code, e)
			}
			return
		}
		again, e := parseConfig(mustJSON(t, &c.NetConf))
		if e != nil {
			t.Fatalf("%q parsed, but its re-encoding does not: %v", b, e)
		}
		if again.cluster != c.cluster || again.bridgeSubnet != c.bridgeSubnet || again.ipamSubnet != c.ipamSubnet ||
			again.hostNat != c.hostNat || again.defaultGW != c.defaultGW || again.MTU != c.MTU || again.Bridge != c.Bridge {
			t.Fatalf("%q: re-parse differs: %+v vs %+v", b, again, c)
		}
	})
}

// ipam.dataDir is cleaned, so the daemon (which refuses "." and ".."
// elements in a notice's data_dir) accepts what the plugin sends.
func TestConfigDataDirCleaned(t *testing.T) {
	c, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"drover","ipam":{"dataDir":"/var/lib/cni/./x/../drover//"}}`))
	if e != nil {
		t.Fatal(e)
	}
	if got, want := c.dataDir, "/var/lib/cni/drover"; got != want {
		t.Fatalf("dataDir: got %q, want %q", got, want)
	}
}

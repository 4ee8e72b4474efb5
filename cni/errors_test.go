package cni

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drovernet/drover/testenv"
)

// Every malformed config and bad environment, through the real entry point
// (the test binary running Main in a child process): exit status 1, a CNI
// error object on stdout with the spec's code and a message naming the
// problem, and never a panic. As root the children run in a namespace of
// their own, so even a wrong "success" could not touch the host.
func TestErrorTable(t *testing.T) {
	root := os.Geteuid() == 0
	var hostNS *testenv.NetNS
	ctrPath := "/proc/self/ns/net" // the plugin's own: only for cases that fail before using it
	if root {
		hostNS = testenv.NewNetNS(t, "cnie")
		ctrPath = testenv.NewNetNS(t, "cnic").Path()
	}
	tmp := t.TempDir()
	notNS := filepath.Join(tmp, "not-a-netns")
	os.WriteFile(notNS, nil, 0o600)
	noDaemon := filepath.Join(tmp, "no.sock")

	base := map[string]any{
		"cniVersion": "1.1.0", "name": "drvtest", "type": "drover", "bridge": "drv-br0",
		"daemonSocket": noDaemon, "ipam": map[string]any{"dataDir": filepath.Join(tmp, "ipam")},
	}
	conf := func(over map[string]any) string {
		c := maps.Clone(base)
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	env := func(over map[string]string) map[string]string {
		e := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": ctrPath, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
		for k, v := range over {
			if v == "" {
				delete(e, k)
			} else {
				e[k] = v
			}
		}
		return e
	}

	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
		msg   string // in the message (or details, with "details: ")
	}{
		// Environment (code 4, named variable).
		{"unknown command", env(map[string]string{"CNI_COMMAND": "FOO"}), conf(nil), types.ErrInvalidEnvironmentVariables, "unknown CNI_COMMAND: FOO"},
		{"no CNI_NETNS", env(map[string]string{"CNI_NETNS": ""}), conf(nil), types.ErrInvalidEnvironmentVariables, "[CNI_NETNS] missing"},
		{"no CNI_CONTAINERID", env(map[string]string{"CNI_CONTAINERID": ""}), conf(nil), types.ErrInvalidEnvironmentVariables, "[CNI_CONTAINERID] missing"},
		{"no CNI_IFNAME", env(map[string]string{"CNI_IFNAME": ""}), conf(nil), types.ErrInvalidEnvironmentVariables, "[CNI_IFNAME] missing"},
		{"no CNI_PATH", env(map[string]string{"CNI_PATH": ""}), conf(nil), types.ErrInvalidEnvironmentVariables, "[CNI_PATH] missing"},
		{"bad CNI_IFNAME", env(map[string]string{"CNI_IFNAME": "a/b"}), conf(nil), types.ErrInvalidEnvironmentVariables, "interface name contains / or :"},
		{"long CNI_IFNAME", env(map[string]string{"CNI_IFNAME": "eth0123456789abc"}), conf(nil), types.ErrInvalidEnvironmentVariables, "interface name is too long"},
		{"bad CNI_CONTAINERID", env(map[string]string{"CNI_CONTAINERID": "-x!"}), conf(nil), types.ErrInvalidEnvironmentVariables, "invalid characters in containerID"},
		{"netns missing", env(map[string]string{"CNI_NETNS": "/run/netns/drv-does-not-exist"}), conf(nil), types.ErrUnknownContainer, "container network namespace /run/netns/drv-does-not-exist does not exist"},
		{"netns not a namespace", env(map[string]string{"CNI_NETNS": notNS}), conf(nil), types.ErrInvalidEnvironmentVariables, "CNI_NETNS=" + notNS + " is not a network namespace"},
		{"CHECK netns missing", env(map[string]string{"CNI_COMMAND": "CHECK", "CNI_NETNS": "/run/netns/drv-does-not-exist"}),
			conf(map[string]any{"prevResult": map[string]any{"cniVersion": "1.1.0", "interfaces": []any{map[string]any{"name": "eth0", "sandbox": "/run/netns/drv-does-not-exist"}}, "ips": []any{map[string]any{"address": "10.42.5.2/24", "gateway": "10.42.5.1", "interface": 0}}}}),
			types.ErrUnknownContainer, "does not exist"},

		// Decoding (code 6).
		{"bad JSON", env(nil), `{"name": "drvtest", `, types.ErrDecodingFailure, "error unmarshall network config"},
		{"not an object", env(nil), `["drvtest"]`, types.ErrDecodingFailure, "cannot unmarshal array"},
		{"mtu is a string", env(nil), conf(map[string]any{"mtu": "1400"}), types.ErrDecodingFailure, "mtu: got a JSON string, want a number"},
		{"isDefaultGateway is a string", env(nil), conf(map[string]any{"isDefaultGateway": "yes"}), types.ErrDecodingFailure, "isDefaultGateway: got a JSON string, want true or false"},
		{"hostNat is a number", env(nil), conf(map[string]any{"hostNat": 1}), types.ErrDecodingFailure, "hostNat: got a JSON number, want true or false"},
		{"ipam not an object", env(nil), conf(map[string]any{"ipam": "drover"}), types.ErrDecodingFailure, `ipam: want an object, got "drover"`},
		{"ipam.subnet is a number", env(nil), conf(map[string]any{"ipam": map[string]any{"subnet": 24}}), types.ErrDecodingFailure, "ipam.subnet: got a JSON number, want a string"},
		{"bad prevResult", env(nil), conf(map[string]any{"prevResult": map[string]any{"ips": "x"}}), types.ErrDecodingFailure, "prevResult"},

		// Unknown keys (code 2, key and value).
		{"unknown key", env(nil), conf(map[string]any{"brige": "br1"}), types.ErrUnsupportedField, `unknown key "brige" = "br1"`},
		{"unknown key hint", env(nil), conf(map[string]any{"brige": "br1"}), types.ErrUnsupportedField, `details: did you mean "bridge"?`},
		{"unknown ipam key", env(nil), conf(map[string]any{"ipam": map[string]any{"subnett": "10.42.5.0/24"}}), types.ErrUnsupportedField, `unknown key "ipam.subnett" = "10.42.5.0/24"`},
		{"rancher key", env(nil), conf(map[string]any{"linkMTUOverhead": 98}), types.ErrUnsupportedField, `details: drover learns the tunnel MTU from the daemon`},
		{"several unknown keys", env(nil), conf(map[string]any{"a1": 1, "b2": 2}), types.ErrUnsupportedField, `unknown key "a1" = 1 in network config (and 1 more: b2)`},

		// Values (code 7, named key).
		{"no name", env(nil), conf(map[string]any{"name": nil}), types.ErrInvalidNetworkConfig, "missing network name"},
		{"bad name", env(nil), conf(map[string]any{"name": "a/b"}), types.ErrInvalidNetworkConfig, "invalid characters found in network name"},
		{"mtu too small", env(nil), conf(map[string]any{"mtu": 100}), types.ErrInvalidNetworkConfig, "mtu: 100 is outside 576..65535"},
		{"mtu negative", env(nil), conf(map[string]any{"mtu": -1}), types.ErrInvalidNetworkConfig, "mtu: -1 is outside"},
		{"mtu too big", env(nil), conf(map[string]any{"mtu": 70000}), types.ErrInvalidNetworkConfig, "mtu: 70000 is outside"},
		{"bridgeSubnet syntax", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.0/33"}), types.ErrInvalidNetworkConfig, `bridgeSubnet: "10.42.1.0/33" is not an IPv4 prefix`},
		{"bridgeSubnet host bits", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.1/24"}), types.ErrInvalidNetworkConfig, "bridgeSubnet: 10.42.1.1/24 has host bits set (want 10.42.1.0/24"},
		{"bridgeSubnet too small", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.0/31"}), types.ErrInvalidNetworkConfig, "bridgeSubnet: 10.42.1.0/31 is too small"},
		{"bridgeSubnet IPv6", env(nil), conf(map[string]any{"bridgeSubnet": "fd00::/64"}), types.ErrInvalidNetworkConfig, `bridgeSubnet: "fd00::/64" is not an IPv4 prefix`},
		{"ipam type", env(nil), conf(map[string]any{"ipam": map[string]any{"type": "host-local"}}), types.ErrInvalidNetworkConfig, `ipam.type: "host-local" is not supported`},
		{"ipam.subnet outside bridgeSubnet", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.0/24", "ipam": map[string]any{"subnet": "10.42.2.0/25"}}), types.ErrInvalidNetworkConfig, "ipam.subnet: 10.42.2.0/25 is not inside bridgeSubnet 10.42.1.0/24"},
		{"rangeStart syntax", env(nil), conf(map[string]any{"ipam": map[string]any{"rangeStart": "10.42.1"}}), types.ErrInvalidNetworkConfig, `ipam.rangeStart: "10.42.1" is not an IPv4 address`},
		{"rangeStart outside", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.0/24", "ipam": map[string]any{"rangeStart": "10.42.2.9"}}), types.ErrInvalidNetworkConfig, "ipam.rangeStart: range start 10.42.2.9 is not a host address of 10.42.1.0/24"},
		{"rangeEnd is broadcast", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.1.0/24", "ipam": map[string]any{"rangeEnd": "10.42.1.255"}}), types.ErrInvalidNetworkConfig, "ipam.rangeEnd: range end 10.42.1.255 is not a host address"},
		{"rangeEnd before rangeStart", env(nil), conf(map[string]any{"ipam": map[string]any{"rangeStart": "10.42.1.9", "rangeEnd": "10.42.1.8"}}), types.ErrInvalidNetworkConfig, "ipam.rangeEnd: 10.42.1.8 is before rangeStart 10.42.1.9"},
		{"clusterCIDR", env(nil), conf(map[string]any{"clusterCIDR": "10.42.0.0"}), types.ErrInvalidNetworkConfig, `clusterCIDR: "10.42.0.0" is not an IPv4 prefix`},
		{"clusterCIDR host bits", env(nil), conf(map[string]any{"clusterCIDR": "10.42.1.0/16"}), types.ErrInvalidNetworkConfig, "clusterCIDR: 10.42.1.0/16 has host bits set"},
		{"flat outside cluster", env(nil), conf(map[string]any{"flat": true, "bridgeSubnet": "10.43.1.0/24"}), types.ErrInvalidNetworkConfig, "bridgeSubnet: 10.43.1.0/24 is outside clusterCIDR 10.42.0.0/16"},
		{"bridge name too long", env(nil), conf(map[string]any{"bridge": "drover-bridge-0123"}), types.ErrInvalidNetworkConfig, `bridge: "drover-bridge-0123" is longer than 15 characters`},
		{"bridge name slash", env(nil), conf(map[string]any{"bridge": "br/0"}), types.ErrInvalidNetworkConfig, `bridge: "br/0" contains`},
		{"daemonSocket relative", env(nil), conf(map[string]any{"daemonSocket": "drover.sock"}), types.ErrInvalidNetworkConfig, `daemonSocket: "drover.sock" is not an absolute path`},
		{"dataDir relative", env(nil), conf(map[string]any{"ipam": map[string]any{"dataDir": "state"}}), types.ErrInvalidNetworkConfig, `ipam.dataDir: "state" is not an absolute path`},
		{"ipMasq contradicts hostNat", env(nil), conf(map[string]any{"ipMasq": true, "hostNat": false}), types.ErrInvalidNetworkConfig, "ipMasq: true contradicts hostNat false"},
		{"dns nameserver", env(nil), conf(map[string]any{"dns": map[string]any{"nameservers": []string{"dns.example"}}}), types.ErrInvalidNetworkConfig, `dns.nameservers[0]: "dns.example" is not an IP address`},
		{"CHECK without prevResult", env(map[string]string{"CNI_COMMAND": "CHECK"}), conf(nil), types.ErrInvalidNetworkConfig, "prevResult: missing"},
		{"DEL with a bad config", env(map[string]string{"CNI_COMMAND": "DEL"}), conf(map[string]any{"mtu": 1}), types.ErrInvalidNetworkConfig, "mtu: 1 is outside"},

		// Versions (code 1).
		{"unknown cniVersion", env(nil), conf(map[string]any{"cniVersion": "9.9.9"}), types.ErrIncompatibleCNIVersion, "incompatible CNI versions"},
		{"GC before 1.1.0", env(map[string]string{"CNI_COMMAND": "GC"}), conf(map[string]any{"cniVersion": "1.0.0"}), types.ErrIncompatibleCNIVersion, "config version does not allow GC"},
		{"STATUS before 1.1.0", env(map[string]string{"CNI_COMMAND": "STATUS"}), conf(map[string]any{"cniVersion": "1.0.0"}), types.ErrIncompatibleCNIVersion, "config version does not allow STATUS"},
		{"CHECK before 0.4.0", env(map[string]string{"CNI_COMMAND": "CHECK"}), conf(map[string]any{"cniVersion": "0.3.1"}), types.ErrIncompatibleCNIVersion, "config version does not allow CHECK"},

		// The daemon (11 for ADD, 50 for STATUS).
		{"daemon down", env(nil), conf(nil), types.ErrTryAgainLater, "drover daemon not reachable at " + noDaemon},
		{"daemon down, no mtu", env(nil), conf(map[string]any{"bridgeSubnet": "10.42.5.0/24"}), types.ErrTryAgainLater, "mtu is not configured, so the plugin needs the daemon"},
		{"STATUS daemon down", env(map[string]string{"CNI_COMMAND": "STATUS"}), conf(nil), types.ErrPluginNotAvailable, "drover daemon not reachable"},
		{"STATUS no free address", env(map[string]string{"CNI_COMMAND": "STATUS"}),
			conf(map[string]any{"mtu": 1400, "bridgeSubnet": "10.42.5.0/30", "ipam": map[string]any{"dataDir": filepath.Join(tmp, "ipam"), "rangeStart": "10.42.5.1", "rangeEnd": "10.42.5.1"}}),
			types.ErrPluginNotAvailable, "no free address in 10.42.5.0/30"},

		// I/O (code 5): the reservation directory cannot be created.
		{"dataDir not writable", env(nil), conf(map[string]any{"mtu": 1400, "bridgeSubnet": "10.42.5.0/24", "ipam": map[string]any{"dataDir": "/proc/drover"}}), types.ErrIOFailure, "ipam: store /proc/drover/drvtest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !root && strings.Contains(tc.stdin, `"dataDir":"/proc/drover"`) {
				t.Skip("needs root: the ADD gets as far as the bridge")
			}
			r := runPlugin(t, self(t), hostNS, tc.env, []byte(tc.stdin))
			if strings.Contains(r.stderr, "panic") {
				t.Fatalf("the plugin panicked:\n%s", r)
			}
			if r.exit != 1 || r.err == nil {
				t.Fatalf("got %s\nwant exit 1 and a CNI error %d", r, tc.code)
			}
			text := r.err.Msg
			if want, ok := strings.CutPrefix(tc.msg, "details: "); ok {
				text, tc.msg = r.err.Details, want
			}
			if r.err.Code != tc.code || !strings.Contains(text, tc.msg) {
				t.Fatalf("got code %d msg %q details %q, want code %d containing %q", r.err.Code, r.err.Msg, r.err.Details, tc.code, tc.msg)
			}
		})
	}
}

// VERSION answers every supported version, and the plugin prints its name
// when run without a command by hand.
func TestVersion(t *testing.T) {
	r := runPlugin(t, self(t), nil, map[string]string{"CNI_COMMAND": "VERSION"}, []byte(`{"cniVersion":"1.1.0"}`))
	if r.exit != 0 {
		t.Fatalf("VERSION: %s", r)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("VERSION output %q: %v", r.stdout, err)
	}
	if got := strings.Join(v.SupportedVersions, ","); got != "0.1.0,0.2.0,0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Fatalf("supported versions: got %s", got)
	}
}

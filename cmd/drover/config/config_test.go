package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `
node:
  name: host-a
  underlay: 192.0.2.1
  prefixes: [10.42.1.0/24]
encapsulation: esp
cipher: aes-128-gcm
peers:
  - name: host-b
    underlay: 192.0.2.2
    prefixes: [10.42.2.0/24]
    sa:
      out: {spi: 0x00000a01, key: "000102030405060708090a0b0c0d0e0fa0a1a2a3"}
      in:  {spi: 0x00000b01, key: "0x10:11:12:13:14:15:16:17:18:19:1a:1b:1c:1d:1e:1f:b0:b1:b2:b3"}
`

func TestParseGood(t *testing.T) {
	c, err := Parse(strings.NewReader(good))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"node.port", c.Node.Port, uint16(4500)},
		{"node.underlay_wait", c.Node.UnderlayWait, time.Duration(0)},
		{"node.tun", c.Node.TUN, "drover0"},
		{"node.mac", c.Node.MACAddr.String(), "0e:00:c0:00:02:01"},
		{"node.address", c.Node.AddressList, []netip.Addr{netip.MustParseAddr("10.42.1.1")}},
		{"vni", c.VNI, uint32(1042)},
		{"peers[0].port", c.Peers[0].Port, uint16(4500)},
		{"peers[0].sa.replay_window", c.Peers[0].SA.ReplayWindow, 1024},
		{"peers[0].sa.in.key[0]", c.Peers[0].SA.In.KeyBytes[0], byte(0x10)},
		{"peers[0].sa.out.spi", c.Peers[0].SA.Out.SPI, uint32(0xa01)},
	}
	for _, ck := range checks {
		if !equal(ck.got, ck.want) {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

// node.underlay_wait is a Go duration; unset (0) means no wait.
func TestParseUnderlayWait(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want time.Duration
	}{
		{"", 0},
		{", underlay_wait: 0s", 0},
		{", underlay_wait: 500ms", 500 * time.Millisecond},
		{", underlay_wait: 60s", time.Minute},
		{", underlay_wait: 1h", time.Hour},
	} {
		y := "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]" + tc.key + "}\n"
		c, err := Parse(strings.NewReader(y))
		if err != nil {
			t.Fatalf("%q: %v", y, err)
		}
		if got := c.Node.UnderlayWait; got != tc.want {
			t.Errorf("%q: got %v, want %v", y, got, tc.want)
		}
	}
}

func equal(a, b any) bool {
	if as, ok := a.([]netip.Addr); ok {
		bs := b.([]netip.Addr)
		if len(as) != len(bs) {
			return false
		}
		for i := range as {
			if as[i] != bs[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

func TestParseVXLANDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(`
node: {name: a, underlay: "2001:db8::1", prefixes: [10.42.1.0/24, "fd42:1::/64"]}
encapsulation: vxlan
peers: [{name: b, underlay: "2001:db8::2", prefixes: [10.42.2.0/24]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Port != 4789 || c.Peers[0].Port != 4789 {
		t.Errorf("ports %d/%d, want 4789", c.Node.Port, c.Peers[0].Port)
	}
	if got := len(c.Node.AddressList); got != 2 {
		t.Errorf("default addresses: got %v, want one IPv4 and one IPv6", c.Node.AddressList)
	}
	if got, want := c.Peers[0].MACAddr.String(), "0e:00:00:00:00:02"; got != want {
		t.Errorf("derived MAC %s, want %s", got, want)
	}
}

// TestParseErrors: every bad field yields an error naming it.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml, path, msg string
	}{
		{"empty", ``, "(file)", "empty"},
		{"syntax", "node: [", "(yaml)", "line"},
		{"unknown key", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbogus: 1\n", "bogus", "unknown key (line 2)"},
		{"unknown nested key", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], colour: red}\n", "colour", "unknown key"},
		{"bad encapsulation", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: gre\n", "encapsulation", `"gre"`},
		{"bad cipher", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\ncipher: des\n", "cipher", `"des"`},
		{"vni too big", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nvni: 16777216\n", "vni", "24 bits"},
		{"mtu small", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nmtu: 100\n", "mtu", "576"},
		{"tun_mtu big", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\ntun_mtu: 70000\n", "tun_mtu", "65535"},
		{"no underlay", "node: {name: a, prefixes: [10.0.0.0/24]}\n", "node.underlay", "not an IP"},
		{"bad underlay", "node: {name: a, underlay: 1.2.3, prefixes: [10.0.0.0/24]}\n", "node.underlay", `"1.2.3"`},
		{"no prefixes", "node: {name: a, underlay: 192.0.2.1}\n", "node.prefixes", "required"},
		{"underlay_wait negative", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], underlay_wait: -1s}\n", "node.underlay_wait", "-1s is outside 0s..1h"},
		{"underlay_wait too long", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], underlay_wait: 2h}\n", "node.underlay_wait", "2h0m0s is outside 0s..1h"},
		{"underlay_wait without unit", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], underlay_wait: 60}\n", "(yaml)", "time.Duration"},
		{"host bits", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.1/24]}\n", "node.prefixes[0]", "10.0.0.0/24"},
		{"bad prefix", "node: {name: a, underlay: 192.0.2.1, prefixes: [banana]}\n", "node.prefixes[0]", "not a prefix"},
		{"bad mac", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], mac: zz}\n", "node.mac", "not a MAC"},
		{"multicast mac", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], mac: '01:00:5e:00:00:01'}\n", "node.mac", "multicast"},
		{"bad tun name", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], tun: a-very-long-interface-name}\n", "node.tun", "1-15"},
		{"bad log level", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nlog: {level: loud}\n", "log.level", `"loud"`},
		{"port not a number", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24], port: http}\n", "(yaml)", "http"},
		{"esp without sa", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24]}]\n", "peers[0].sa", "required"},
		{"vxlan with sa", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {}}]\n", "peers[0].sa", "only used"},
		{"peer no name", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{underlay: 192.0.2.2, prefixes: [10.1.0.0/24]}]\n", "peers[0].name", "required"},
		{"duplicate peer name", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24]}, {name: b, underlay: 192.0.2.3, prefixes: [10.2.0.0/24]}]\n", "peers[1].name", "peers[0]"},
		{"peer own underlay", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.1, prefixes: [10.1.0.0/24]}]\n", "peers[0].underlay", "own"},
		{"peer family", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: '2001:db8::2', prefixes: [10.1.0.0/24]}]\n", "peers[0].underlay", "family"},
		{"prefix claimed twice", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.0.0.0/24]}]\n", "peers[0].prefixes[0]", "node"},
		{"reserved spi", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {out: {spi: 255, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}, in: {spi: 256, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}]\n", "peers[0].sa.out.spi", "reserved"},
		{"short key", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {out: {spi: 256, key: 000102030405060708090a0b0c0d0e0f}, in: {spi: 257, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}]\n", "peers[0].sa.out.key", "needs 20"},
		{"key not hex", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {out: {spi: 256, key: xyz}, in: {spi: 257, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}]\n", "peers[0].sa.out.key", "not hex"},
		{"window small", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {replay_window: 64, out: {spi: 256, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}, in: {spi: 257, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}]\n", "peers[0].sa.replay_window", "1024"},
		{"duplicate in spi", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.1.0.0/24], sa: {out: {spi: 256, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}, in: {spi: 257, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}, {name: c, underlay: 192.0.2.3, prefixes: [10.2.0.0/24], sa: {out: {spi: 258, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}, in: {spi: 257, key: 000102030405060708090a0b0c0d0e0fa0a1a2a3}}}]\n", "peers[1].sa.in.spi", "peers[0]"},
		{"http not host:port", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nhttp: {listen: 9743}\n", "http.listen", "want IP:PORT"},
		{"http host a name", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nhttp: {listen: 'localhost:9743'}\n", "http.listen", "localhost is not an IP address"},
		{"http port 0", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nhttp: {listen: '127.0.0.1:0'}\n", "http.listen", "not 1..65535"},
		{"http port too big", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nhttp: {listen: '[::1]:70000'}\n", "http.listen", "not 1..65535"},
		{"bad datastore", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, datastore: etcd}\n", "cluster.datastore", `"etcd" is not one of gossip, kubernetes`},
		{"kubernetes with join", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, datastore: kubernetes, join: [192.0.2.2]}\n", "cluster.join", "not used with datastore kubernetes"},
		{"kubernetes with prefixes", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.9.0.0/24]}\ncluster: {key_file: k, datastore: kubernetes}\n", "node.prefixes", "podCIDR"},
		{"kubernetes bad pod_cidr", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, datastore: kubernetes, kubernetes: {pod_cidr: auto}}\n", "cluster.kubernetes.pod_cidr", `"auto"`},
		{"kubeconfig with gossip", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, kubernetes: {kubeconfig: /k}}\n", "cluster.kubernetes.kubeconfig", "datastore is gossip"},
		{"metadata not host:port", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nmetadata: {listen: '169.254.169.250'}\n", "metadata.listen", "want IPv4:PORT"},
		{"metadata everywhere", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nmetadata: {listen: '0.0.0.0:80'}\n", "metadata.listen", "must not listen everywhere"},
		{"metadata IPv6", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nmetadata: {listen: '[fe80::1]:80'}\n", "metadata.listen", "one unicast IPv4 address"},
		{"direct with esp, untrusted", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, direct: true}\n", "cluster.direct", "unencrypted; set cluster.direct_trusted: true"},
		{"direct_trusted alone", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, direct_trusted: true}\n", "cluster.direct_trusted", "neither cluster.direct nor bgp.import"},
		{"bgp without as", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {neighbors: [{address: 192.0.2.254, as: 64600}]}\n", "bgp.as", "is required"},
		{"bgp no neighbours", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601}\n", "bgp.neighbors", "at least one"},
		{"bgp bad neighbour", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: router, as: 64600}]}\n", "bgp.neighbors[0].address", "not an IP address"},
		{"bgp neighbour twice", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: 192.0.2.254, as: 64600}, {address: 192.0.2.254, as: 64602}]}\n", "bgp.neighbors[1].address", "also bgp.neighbors[0]"},
		{"bgp neighbour without as", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: 192.0.2.254}]}\n", "bgp.neighbors[0].as", "is required"},
		{"bgp passive without listener", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: 192.0.2.254, as: 64600, passive: true}]}\n", "bgp.neighbors[0].passive", "needs bgp.listen_port"},
		{"bgp router id from IPv6 underlay", "node: {name: a, underlay: '2001:db8::1', prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: '2001:db8::fe', as: 64600}]}\n", "bgp.router_id", "is required when node.underlay is not an IPv4 address"},
		{"bgp restart time", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, restart_time: 2h, neighbors: [{address: 192.0.2.254, as: 64600}]}\n", "bgp.restart_time", "1s..4095s"},
		{"bgp import without a cluster", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, import: true, neighbors: [{address: 192.0.2.254, as: 64600}]}\n", "bgp.import", "needs a cluster section"},
		{"bgp import with esp, untrusted", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k}\nbgp: {as: 64601, import: true, neighbors: [{address: 192.0.2.254, as: 64600}]}\n", "bgp.import", "set cluster.direct_trusted: true"},
		{"allow_from not a prefix", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nfirewall: {allow_from: [198.51.100.7/33]}\n", "firewall.allow_from[0]", "not a prefix"},
		{"http on the gossip port", "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k}\nhttp: {listen: ':7946'}\n", "http.listen", "cluster.port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml))
			if err == nil {
				t.Fatal("got nil error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %T, want config.Errors", err)
			}
			for _, fe := range es {
				if fe.Path == tc.path && strings.Contains(fe.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("got %q, want an error at %s containing %q", err, tc.path, tc.msg)
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c, err := Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	y, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(strings.NewReader(string(y)))
	if err != nil {
		t.Fatalf("re-parse of marshalled config: %v\n%s", err, y)
	}
	if c2.Peers[0].SA.In.SPI != c.Peers[0].SA.In.SPI || c2.Node.Name != c.Node.Name {
		t.Errorf("round trip changed the config:\n%s", y)
	}
}

// http.listen: loopback by default, "" and none turn it off, and each
// survives Marshal (testenv writes configs that way).
// Direct routing is accepted with VXLAN as is, and with ESP only when the
// operator says the segment is trusted.
func TestClusterDirect(t *testing.T) {
	for _, y := range []string{
		"node: {name: a, underlay: 192.0.2.1}\nencapsulation: vxlan\ncluster: {key_file: k, direct: true}\n",
		"node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: k, direct: true, direct_trusted: true}\n",
	} {
		c, err := Parse(strings.NewReader(y))
		if err != nil {
			t.Fatalf("%s: %v", y, err)
		}
		if !c.Cluster.Direct {
			t.Errorf("%s: direct not set", y)
		}
	}
}

func TestBGPDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader("node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/24]}\nbgp: {as: 64601, neighbors: [{address: 192.0.2.254, as: 64600}]}\nfirewall: {allow_from: [198.51.100.7/24]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if b.RouterIDAddr != netip.MustParseAddr("192.0.2.1") || !b.GracefulRestartOn() || b.RestartTime != 120*time.Second ||
		b.Neighbors[0].AddressAddr != netip.MustParseAddr("192.0.2.254") {
		t.Errorf("defaults: got router ID %v, graceful restart %v for %v, neighbour %v; want 192.0.2.1, true for 2m0s, 192.0.2.254",
			b.RouterIDAddr, b.GracefulRestartOn(), b.RestartTime, b.Neighbors[0].AddressAddr)
	}
	if got := c.Firewall.AllowFromList; len(got) != 1 || got[0] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("allow_from: got %v, want [198.51.100.0/24] (masked)", got)
	}
}

func TestHTTPListen(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"default", "", DefaultHTTPListen},
		{"empty section", "http: {}\n", DefaultHTTPListen},
		{"off with empty", "http: {listen: ''}\n", ""},
		{"off with none", "http: {listen: none}\n", ""},
		{"every address", "http: {listen: ':9743'}\n", ":9743"},
		{"ipv6", "http: {listen: '[::1]:9100'}\n", "[::1]:9100"},
		{"node address", "http: {listen: '192.0.2.1:9743'}\n", "192.0.2.1:9743"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse(strings.NewReader(good + c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HTTP.ListenAddr != c.want {
				t.Fatalf("listen address: got %q, want %q", cfg.HTTP.ListenAddr, c.want)
			}
			y, err := cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			cfg2, err := Parse(strings.NewReader(string(y)))
			if err != nil {
				t.Fatalf("re-parse of marshalled config: %v\n%s", err, y)
			}
			if cfg2.HTTP.ListenAddr != c.want {
				t.Fatalf("after Marshal: got %q, want %q\n%s", cfg2.HTTP.ListenAddr, c.want, y)
			}
		})
	}
}

// The forward filter is on unless turned off, and stays off through
// Marshal (testenv writes configs that way).
func TestFirewallForward(t *testing.T) {
	c, err := Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Firewall.ForwardOn() {
		t.Error("default: got the forward filter off, want on")
	}
	c, err = Parse(strings.NewReader(good + "firewall: {forward: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Firewall.ForwardOn() {
		t.Error("firewall.forward false: got on")
	}
	y, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := Parse(strings.NewReader(string(y))); err != nil || c2.Firewall.ForwardOn() {
		t.Errorf("round trip of forward: false: got on (%v)\n%s", err, y)
	}
	if _, err := Parse(strings.NewReader(good + "firewall: {froward: true}\n")); err == nil || !strings.Contains(err.Error(), "froward") {
		t.Errorf("misspelt key: got %v, want an error naming it", err)
	}
}

func TestTunnelMTU(t *testing.T) {
	cases := []struct {
		encap string
		mtu   int
		v6    bool
		want  int
	}{
		{EncapESP, 1500, false, 1438}, // the kernel's figure (shared/interop README)
		{EncapESP, 1500, true, 1418},
		{EncapVXLAN, 1500, false, 1450}, // kernel vxlan0: underlay - 50
		{EncapVXLAN, 1500, true, 1430},
		{EncapESP, 9000, false, 8938},
	}
	for _, tc := range cases {
		if got := TunnelMTU(tc.encap, tc.mtu, tc.v6); got != tc.want {
			t.Errorf("TunnelMTU(%s, %d, v6=%v): got %d, want %d", tc.encap, tc.mtu, tc.v6, got, tc.want)
		}
	}
}

// A file holding manual keys must be 0600 or stricter; one without keys
// may be world-readable.
func TestLoadMode(t *testing.T) {
	dir := t.TempDir()
	noKeys := "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.42.2.0/24]}]\n"
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		msg        string // "": loads
	}{
		{"keys 0600", good, 0o600, ""},
		{"keys 0400", good, 0o400, ""},
		{"keys 0644", good, 0o644, "mode 0644 lets group or others access it, and it holds manual ESP keys (peers[0].sa): want 0600 or stricter (chmod 600 "},
		{"keys 0640", good, 0o640, "mode 0640"},
		{"keys 0620", good, 0o620, "mode 0620"},
		{"no keys 0644", noKeys, 0o644, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // not subject to the umask
				t.Fatal(err)
			}
			_, err := Load(path)
			switch {
			case tc.msg == "" && err != nil:
				t.Fatalf("got %v, want it loaded", err)
			case tc.msg != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "(file): "+tc.msg)):
				t.Fatalf("got %v, want an ErrInvalid containing %q", err, tc.msg)
			}
		})
	}
}

// In kubernetes mode node.name and node.underlay come from the downward
// API's NODE_NAME and NODE_IP when unset; without either an underlay the
// error says where it may come from.
func TestKubernetesFromEnv(t *testing.T) {
	const y = "cluster: {key_file: k, datastore: kubernetes}\n"
	t.Setenv("NODE_NAME", "worker-7")
	t.Setenv("NODE_IP", "192.0.2.7")
	cfg, err := Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Name != "worker-7" || cfg.Node.UnderlayAddr != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("node: got name %q underlay %v, want worker-7 192.0.2.7", cfg.Node.Name, cfg.Node.UnderlayAddr)
	}
	if cfg.Cluster.Kubernetes.PodCIDR != "node" || !cfg.Cluster.IsKubernetes() {
		t.Fatalf("cluster: got %+v, want kubernetes with pod_cidr node", cfg.Cluster)
	}
	// The file wins over the environment.
	cfg, err = Parse(strings.NewReader("node: {name: n1, underlay: 192.0.2.9}\n" + y))
	if err != nil || cfg.Node.Name != "n1" || cfg.Node.Underlay != "192.0.2.9" {
		t.Fatalf("explicit node: got %v %+v, want the file's", err, cfg.Node)
	}
	t.Setenv("NODE_IP", "")
	_, err = Parse(strings.NewReader(y))
	if err == nil || !strings.Contains(err.Error(), "node.underlay: is required: set it, or NODE_IP") {
		t.Fatalf("no underlay: got %v, want it named with NODE_IP", err)
	}
	if strings.Count(err.Error(), "node.underlay") != 1 {
		t.Fatalf("no underlay: got %v, want one error for it", err)
	}
	// Gossip mode ignores the environment.
	t.Setenv("NODE_IP", "192.0.2.7")
	if _, err := Parse(strings.NewReader("cluster: {key_file: k}\n")); err == nil || !strings.Contains(err.Error(), "node.underlay") {
		t.Fatalf("gossip mode without underlay: got %v, want an error", err)
	}
}

// metadata.listen: Rancher's address by default, off with "" and none, and
// each survives Marshal.
func TestMetadataListen(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"default", "", DefaultMetadataListen},
		{"off with empty", "metadata: {listen: ''}\n", "invalid AddrPort"},
		{"off with none", "metadata: {listen: none}\n", "invalid AddrPort"},
		{"moved", "metadata: {listen: '169.254.1.1:8080'}\n", "169.254.1.1:8080"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse(strings.NewReader(good + c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Metadata.ListenAddr.String(); got != c.want {
				t.Fatalf("listen address: got %q, want %q", got, c.want)
			}
			y, err := cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			cfg2, err := Parse(strings.NewReader(string(y)))
			if err != nil || cfg2.Metadata.ListenAddr.String() != c.want {
				t.Fatalf("after Marshal: got %v, %v; want %q\n%s", cfg2.Metadata.ListenAddr, err, c.want, y)
			}
		})
	}
}

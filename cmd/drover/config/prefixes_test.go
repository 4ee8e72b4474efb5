package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// prefixErrors returns the errors err holds for prefix fields
// ("node.prefixes[i]", "peers[i].prefixes[j]"), as "path: message".
func prefixErrors(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %T (%v), want config.Errors", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var out []string
	for _, e := range es {
		if strings.Contains(e.Path, "prefixes[") {
			out = append(out, e.Error())
		}
	}
	return out
}

// matches reports whether every got[i] has want[i] as a prefix
// ("path: start of message").
func matches(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

const peerB = "{name: b, underlay: 192.0.2.2, prefixes: [%s]}"

// TestPrefixChecks: prefixes a host can know are wrong from its own
// configuration are refused, each naming its field; sane ones pass.
func TestPrefixChecks(t *testing.T) {
	cluster := "cluster: {key_file: /k}\n"
	cases := []struct {
		name string
		yaml string
		want []string // "path: message start", in file order; none: accepted
	}{
		{"sane", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24, 'fd42:1::/64']}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.42.2.0/24, 10.42.3.0/24]}]\n", nil},
		{"10/8 is wide enough", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/8, 'fd00::/16']}\n", nil},
		{"default route", "node: {name: a, underlay: 192.0.2.1, prefixes: [0.0.0.0/0]}\n", []string{"node.prefixes[0]: 0.0.0.0/0 is a default route"}},
		{"v4 halves", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24, 0.0.0.0/1, 128.0.0.0/1]}\n", []string{
			"node.prefixes[1]: 0.0.0.0/1 is half of the default route",
			"node.prefixes[2]: 128.0.0.0/1 is half of the default route",
		}},
		{"v6 default and halves", "node: {name: a, underlay: 192.0.2.1, prefixes: ['::/0', '::/1', '8000::/1']}\n", []string{
			"node.prefixes[0]: ::/0 is a default route",
			"node.prefixes[1]: ::/1 is half of the default route",
			"node.prefixes[2]: 8000::/1 is half of the default route",
		}},
		{"wider than /8", "node: {name: a, underlay: 192.0.2.1, prefixes: [8.0.0.0/7]}\n", []string{"node.prefixes[0]: 8.0.0.0/7 is wider than /8"}},
		{"v6 wider than /16", "node: {name: a, underlay: 192.0.2.1, prefixes: ['fc00::/7']}\n", []string{"node.prefixes[0]: fc00::/7 is wider than /16"}},
		{"peer default route", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [" + strings.Replace(peerB, "%s", "0.0.0.0/0", 1) + "]\n", []string{"peers[0].prefixes[0]: 0.0.0.0/0 is a default route"}},
		{"node prefixes nest", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.0.0/16, 10.42.1.0/24]}\n", []string{"node.prefixes[1]: 10.42.1.0/24 overlaps node.prefixes[0] (10.42.0.0/16)"}},
		{"node prefix twice", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24, 10.42.1.0/24]}\n", []string{"node.prefixes[1]: 10.42.1.0/24 is also claimed by node.prefixes[0]"}},
		{"peer's container in node.prefixes", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.2.5/32]}\nencapsulation: vxlan\npeers: [" + strings.Replace(peerB, "%s", "10.42.2.0/24", 1) + "]\n", []string{"peers[0].prefixes[0]: 10.42.2.0/24 overlaps node.prefixes[0] (10.42.2.5/32)"}},
		{"peer's prefix equals node's", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [" + strings.Replace(peerB, "%s", "10.42.1.0/24", 1) + "]\n", []string{"peers[0].prefixes[0]: 10.42.1.0/24 is also claimed by node.prefixes[0]"}},
		{"peers nest (gateway peer)", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.0.0.0/8]}, {name: c, underlay: 192.0.2.3, prefixes: [10.43.0.0/24]}]\n", []string{
			// 10.0.0.0/8 holds node.prefixes[0]: refused; the nested
			// peer prefix is allowed.
			"peers[0].prefixes[0]: 10.0.0.0/8 overlaps node.prefixes[0] (10.42.1.0/24)",
		}},
		{"peers nest, node outside", "node: {name: a, underlay: 192.0.2.1, prefixes: [172.16.1.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.0.0.0/8]}, {name: c, underlay: 192.0.2.3, prefixes: [10.43.0.0/24]}]\n", nil},
		{"peers same prefix", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 192.0.2.2, prefixes: [10.42.2.0/24]}, {name: c, underlay: 192.0.2.3, prefixes: [10.42.2.0/24]}]\n", []string{"peers[1].prefixes[0]: 10.42.2.0/24 is also claimed by peers[0].prefixes[0]"}},
		{"holds node.underlay", "node: {name: a, underlay: 10.42.1.9, prefixes: [10.42.1.0/24]}\n", []string{"node.prefixes[0]: 10.42.1.0/24 holds node.underlay 10.42.1.9"}},
		{"holds a peer's underlay", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\nencapsulation: vxlan\npeers: [{name: b, underlay: 198.51.100.7, prefixes: [198.51.100.0/24]}]\n", []string{"peers[0].prefixes[0]: 198.51.100.0/24 holds peers[0].underlay 198.51.100.7"}},
		{"cluster: inside the CIDR", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.5/32]}\n" + cluster, []string{"node.prefixes[0]: 10.42.1.5/32 overlaps cluster.cidr 10.42.0.0/16"}},
		{"cluster: holds the CIDR", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.0.0.0/8]}\n" + cluster, []string{"node.prefixes[0]: 10.0.0.0/8 overlaps cluster.cidr 10.42.0.0/16"}},
		{"cluster: peer inside the CIDR", "node: {name: a, underlay: 192.0.2.1}\nencapsulation: vxlan\npeers: [" + strings.Replace(peerB, "%s", "10.42.7.0/24", 1) + "]\n" + cluster, []string{"peers[0].prefixes[0]: 10.42.7.0/24 overlaps cluster.cidr 10.42.0.0/16"}},
		{"cluster: outside the CIDR", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.43.1.0/24]}\nencapsulation: vxlan\npeers: [" + strings.Replace(peerB, "%s", "10.43.2.0/24", 1) + "]\n" + cluster, nil},
		{"cluster: other CIDR", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\ncluster: {key_file: /k, cidr: 10.50.0.0/16}\n", nil},
		{"the issue's careless host", "node: {name: h4, underlay: 192.0.2.4, prefixes: [100.64.0.0/24, 192.0.2.128/25, 0.0.0.0/1, 10.42.1.2/32]}\n" + cluster, []string{
			// [1] overlaps the underlay subnet: CheckUnderlaySubnets.
			"node.prefixes[2]: 0.0.0.0/1 is half of the default route",
			"node.prefixes[3]: 10.42.1.2/32 overlaps cluster.cidr 10.42.0.0/16",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml))
			if got := prefixErrors(t, err); !matches(got, tc.want) {
				t.Fatalf("got %q (all: %v), want %q", got, err, tc.want)
			}
			if err != nil && tc.want == nil {
				t.Fatalf("got %v, want no error", err)
			}
		})
	}
}

// TestCheckUnderlaySubnets: a prefix overlapping a subnet of the underlay's
// interface is refused, naming its field.
func TestCheckUnderlaySubnets(t *testing.T) {
	c, err := Parse(strings.NewReader(`
node: {name: h4, underlay: 192.0.2.4, prefixes: [100.64.0.0/24, 192.0.2.128/25, 10.42.4.0/24, 'fd42:4::/64']}
encapsulation: vxlan
peers:
  - {name: h1, underlay: 192.0.2.1, prefixes: [10.42.1.0/24, 198.51.100.0/24]}
`))
	if err != nil {
		t.Fatal(err)
	}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	cases := []struct {
		name    string
		subnets []netip.Prefix
		want    []string
	}{
		{"none", nil, nil},
		{"elsewhere", pfx("203.0.113.0/24", "2001:db8::/64"), nil},
		{"underlay /24", pfx("192.0.2.0/24"), []string{"node.prefixes[1]: 192.0.2.128/25 overlaps the underlay subnet 192.0.2.0/24"}},
		{"underlay /16 holds two", pfx("fe80::/64", "100.64.0.0/16"), []string{"node.prefixes[0]: 100.64.0.0/24 overlaps the underlay subnet 100.64.0.0/16"}},
		{"a peer's prefix", pfx("198.51.100.128/25"), []string{"peers[0].prefixes[1]: 198.51.100.0/24 overlaps the underlay subnet 198.51.100.128/25"}},
		{"v6", pfx("fd42:4::/48"), []string{"node.prefixes[3]: fd42:4::/64 overlaps the underlay subnet fd42:4::/48"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.CheckUnderlaySubnets(tc.subnets)
			if got := prefixErrors(t, err); !matches(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if tc.want == nil && err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if tc.want != nil && !slices.ContainsFunc(prefixErrors(t, err), func(s string) bool { return strings.Contains(s, "cut this host off its peers") }) {
				t.Fatalf("%v does not say why", err)
			}
		})
	}
}

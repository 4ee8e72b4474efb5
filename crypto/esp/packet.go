package esp

import (
	"encoding/binary"
	"strconv"
)

// Packet geometry (RFC 4303 §2, with the 8-byte explicit IV of RFC 4106 §3.1
// and RFC 7634 §3). Offsets are into the UDP payload (RFC 3948 §2.1).
const (
	HeaderLen = 8                     // SPI(4) + sequence number, low 32 bits (4)
	IVLen     = 8                     // explicit IV
	Headroom  = HeaderLen + IVLen     // bytes in front of the inner packet that Seal fills in
	ICVLen    = 16                    // integrity check value (AEAD tag)
	Tailroom  = 3 + 2 + ICVLen        // max pad + pad length + next header + ICV
	minLen    = Headroom + 2 + ICVLen // smallest packet with a trailer: no inner bytes, no pad
)

// Next header values (RFC 4303 §2.6) of the tunnel-mode inner packet.
const (
	NextHeaderIPv4 = 4  // IP-in-IP
	NextHeaderIPv6 = 41 // IPv6
)

// padLen returns the kernel's transmit padding for an inner packet of n
// bytes: the least that makes n + pad + 2 a multiple of 4 (RFC 4303 §2.4;
// the AEADs have block size 1, so only ESP's 4-byte alignment counts).
func padLen(n int) int { return -(n + 2) & 3 }

// SealedLen returns the length of the ESP packet (the UDP payload) that
// carries an inner packet of inner bytes.
func SealedLen(inner int) int { return Headroom + inner + padLen(inner) + 2 + ICVLen }

// MaxInner returns the largest inner packet whose ESP packet fits in payload
// UDP payload bytes, or 0 if none does. On a 1500-byte IPv4 underlay the
// payload is 1500 − 20 − 8 = 1472 and MaxInner is 1438, the kernel's tunnel
// MTU.
func MaxInner(payload int) int {
	n := (payload-Headroom-ICVLen)&^3 - 2
	if n < 1 {
		return 0
	}
	return n
}

// Kind is the class of a datagram received on the ESP-in-UDP port.
type Kind uint8

// RFC 3948 §2.2/§2.3 classes, as the kernel's UDP_ENCAP_ESPINUDP sorts them.
const (
	KindESP       Kind = iota + 1 // an ESP packet: decrypt it
	KindKeepalive                 // NAT-keepalive, exactly the byte 0xff: drop silently
	KindNonESP                    // non-ESP marker (4 zero bytes, IKE) or any other payload of ≤ 8 bytes
)

func (k Kind) String() string {
	switch k {
	case KindESP:
		return "esp"
	case KindKeepalive:
		return "keepalive"
	case KindNonESP:
		return "non-esp"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Classify sorts a UDP payload received on the ESP-in-UDP port (RFC 3948):
// a single 0xff byte is a NAT-keepalive (§2.3); a payload starting with the
// 4-byte zero non-ESP marker (§2.2), where an SPI would be, is IKE; and, like
// the kernel, a payload of 8 bytes or less is never ESP. Everything else is
// KindESP. Classify does not allocate and accepts any input.
func Classify(payload []byte) Kind {
	switch {
	case len(payload) == 1 && payload[0] == 0xff:
		return KindKeepalive
	case len(payload) <= HeaderLen:
		return KindNonESP
	case payload[0]|payload[1]|payload[2]|payload[3] == 0:
		return KindNonESP
	}
	return KindESP
}

// PeekSPI returns the SPI of an ESP packet so the receiver can find its SA.
// It reports false if Classify(pkt) is not KindESP.
func PeekSPI(pkt []byte) (uint32, bool) {
	if Classify(pkt) != KindESP {
		return 0, false
	}
	return binary.BigEndian.Uint32(pkt), true
}

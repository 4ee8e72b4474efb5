package packet

import "encoding/binary"

const (
	// EthHeaderLen is the Ethernet II header: destination, source, EtherType.
	// drover's frames carry no FCS (TAP and VXLAN hand frames over without
	// it) and no 802.1Q tag.
	EthHeaderLen = 14

	// EtherTypes (IEEE 802 numbers registered with IANA).
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86DD
)

// MAC is an IEEE 802 48-bit MAC address. It is a comparable value, usable
// as a map key.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ParseMAC parses a 48-bit MAC in the usual six-group form with ':' or '-'
// separators ("02:42:0a:2a:01:01", "02-42-0A-2A-01-01"); each group is two
// hex digits. Other forms (EUI-64, dotted Cisco) return ErrHeader. It is for
// configuration, not the packet path, but does not allocate either. On error
// it returns the zero MAC.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, ErrHeader
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return m, ErrHeader
	}
	for i := range m {
		j := i * 3
		if i > 0 && s[j-1] != sep {
			return MAC{}, ErrHeader
		}
		hi, ok1 := unhexDigit(s[j])
		lo, ok2 := unhexDigit(s[j+1])
		if !ok1 || !ok2 {
			return MAC{}, ErrHeader
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func unhexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String returns the address as lower-case hex in six colon-separated groups,
// the form ip(8) prints and ParseMAC reads.
func (m MAC) String() string {
	const hexDigits = "0123456789abcdef"
	var b [17]byte
	for i, v := range m {
		if i > 0 {
			b[i*3-1] = ':'
		}
		b[i*3] = hexDigits[v>>4]
		b[i*3+1] = hexDigits[v&0x0f]
	}
	return string(b[:])
}

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsMulticast reports whether the group bit (I/G, the least significant bit
// of the first octet) is set; broadcast is a multicast address too.
func (m MAC) IsMulticast() bool { return m[0]&0x01 != 0 }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// Eth is a decoded Ethernet II header.
type Eth struct {
	Dst, Src MAC
	// Type is the EtherType as found. Values below 0x0600 are IEEE 802.3
	// length fields (LLC frames, e.g. STP); an 802.1Q tag shows up as
	// 0x8100. Both are returned as they are: the caller dispatches on Type
	// and drops what it does not handle.
	Type uint16
}

// Parse decodes the Ethernet header at the start of b; the payload starts
// at b[EthHeaderLen:]. It fails only with ErrShort, never panics and does
// not allocate. On error e is left unchanged.
func (e *Eth) Parse(b []byte) error {
	if len(b) < EthHeaderLen {
		return ErrShort
	}
	*e = Eth{
		Dst:  MAC(b[0:6]),
		Src:  MAC(b[6:12]),
		Type: binary.BigEndian.Uint16(b[12:14]),
	}
	return nil
}

// PutEth writes an Ethernet header into b[:EthHeaderLen]. Like
// binary.BigEndian.PutUint64 it panics if b is shorter than EthHeaderLen.
func PutEth(b []byte, dst, src MAC, etherType uint16) {
	_ = b[EthHeaderLen-1] // one bounds check for the whole header
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], etherType)
}

// AppendEth appends an Ethernet header to b and returns the extended slice,
// allocating only if cap(b) is too small.
func AppendEth(b []byte, dst, src MAC, etherType uint16) []byte {
	n := len(b)
	b = append(b, make([]byte, EthHeaderLen)...) // no allocation when cap suffices
	PutEth(b[n:], dst, src, etherType)
	return b
}

package gso

import (
	"bytes"
	"errors"
	"testing"
)

// hdrVectors are written by hand from struct virtio_net_hdr
// (include/uapi/linux/virtio_net.h): flags, gso_type, then hdr_len,
// gso_size, csum_start and csum_offset as little-endian 16-bit words.
var hdrVectors = []struct {
	name string
	wire []byte
	hdr  Hdr
}{
	{
		name: "none",
		wire: []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		hdr:  Hdr{},
	},
	{
		// What the kernel hands over for a TCP/IPv4 super-packet with
		// timestamps: 20 + 32 bytes of headers, MSS 1386 (0x056a).
		name: "tcpv4",
		wire: []byte{0x01, 0x01, 0x34, 0x00, 0x6a, 0x05, 0x14, 0x00, 0x10, 0x00},
		hdr:  Hdr{Flags: FlagNeedsCsum, Type: TypeTCPv4, HdrLen: 52, Size: 1386, CsumStart: 20, CsumOffset: 16},
	},
	{
		name: "tcpv6 ecn",
		wire: []byte{0x01, 0x84, 0x48, 0x00, 0x58, 0x05, 0x28, 0x00, 0x10, 0x00},
		hdr:  Hdr{Flags: FlagNeedsCsum, Type: TypeTCPv6 | TypeECN, HdrLen: 72, Size: 1368, CsumStart: 40, CsumOffset: 16},
	},
	{
		name: "udp_l4 v6",
		wire: []byte{0x01, 0x05, 0x30, 0x00, 0xac, 0x05, 0x28, 0x00, 0x06, 0x00},
		hdr:  Hdr{Flags: FlagNeedsCsum, Type: TypeUDPL4, HdrLen: 48, Size: 1452, CsumStart: 40, CsumOffset: 6},
	},
	{
		name: "data valid",
		wire: []byte{0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0},
		hdr:  Hdr{Flags: FlagDataValid},
	},
	{
		// Every byte distinct, so a swapped or misplaced field shows.
		name: "byte order",
		wire: []byte{0xa1, 0xb2, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08},
		hdr:  Hdr{Flags: 0xa1, Type: 0xb2, HdrLen: 0x0201, Size: 0x0403, CsumStart: 0x0605, CsumOffset: 0x0807},
	},
}

func TestHdrVectors(t *testing.T) {
	for _, v := range hdrVectors {
		t.Run(v.name, func(t *testing.T) {
			var h Hdr
			if err := h.Decode(v.wire); err != nil {
				t.Fatalf("Decode(%x): %v", v.wire, err)
			}
			if h != v.hdr {
				t.Errorf("Decode(%x): got %+v, want %+v", v.wire, h, v.hdr)
			}
			got := make([]byte, HdrLen)
			v.hdr.Encode(got)
			if !bytes.Equal(got, v.wire) {
				t.Errorf("Encode(%+v): got %x, want %x", v.hdr, got, v.wire)
			}
		})
	}
}

func TestHdrDecodeLonger(t *testing.T) {
	// A frame is the header followed by the packet: Decode reads the
	// first HdrLen bytes only.
	v := hdrVectors[1]
	b := append(append([]byte(nil), v.wire...), 0x45, 0, 0, 0)
	var h Hdr
	if err := h.Decode(b); err != nil || h != v.hdr {
		t.Fatalf("Decode(%x): got %+v, %v; want %+v, nil", b, h, err, v.hdr)
	}
}

func TestHdrEncodeLeavesRest(t *testing.T) {
	b := bytes.Repeat([]byte{0xee}, HdrLen+4)
	hdrVectors[1].hdr.Encode(b)
	if got, want := b[HdrLen:], []byte{0xee, 0xee, 0xee, 0xee}; !bytes.Equal(got, want) {
		t.Fatalf("bytes after the header: got %x, want %x", got, want)
	}
}

func TestHdrDecodeShort(t *testing.T) {
	for n := range HdrLen {
		h := Hdr{Flags: 7}
		if err := h.Decode(make([]byte, n)); !errors.Is(err, ErrHdr) {
			t.Errorf("Decode of %d bytes: got %v, want ErrHdr", n, err)
		}
		if h != (Hdr{Flags: 7}) {
			t.Errorf("Decode of %d bytes changed the header: got %+v", n, h)
		}
	}
}

func TestHdrEncodeShortPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Encode into 9 bytes: got no panic, want a bounds panic")
		}
	}()
	var h Hdr
	h.Encode(make([]byte, HdrLen-1))
}

func FuzzHdr(f *testing.F) {
	for _, v := range hdrVectors {
		f.Add(v.wire)
	}
	f.Add([]byte{})                  // empty
	f.Add(make([]byte, HdrLen-1))    // one byte short
	f.Add(make([]byte, HdrLen+1500)) // a whole frame
	f.Fuzz(func(t *testing.T, b []byte) {
		var h, h2 Hdr
		if err := h.Decode(b); err != nil {
			if len(b) >= HdrLen {
				t.Fatalf("Decode(%x): %v", b, err)
			}
			return
		}
		if len(b) < HdrLen {
			t.Fatalf("Decode of %d bytes: got nil error, want ErrHdr", len(b))
		}
		out := make([]byte, HdrLen)
		h.Encode(out)
		if !bytes.Equal(out, b[:HdrLen]) {
			t.Fatalf("Encode(Decode(%x)): got %x, want %x", b[:HdrLen], out, b[:HdrLen])
		}
		if err := h2.Decode(out); err != nil || h2 != h {
			t.Fatalf("re-decode of %x: got %+v, %v; want %+v", out, h2, err, h)
		}
	})
}

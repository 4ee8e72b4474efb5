package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

const mss = 1386 // what the router's TUN MTU gives with timestamps

// splitCases are super-packets of every kind the kernel hands over, with
// payloads that are an exact multiple of the segment size, not a multiple
// (odd, so the last segment's checksum pads), one byte more than one
// segment, and less than one segment.
var splitCases = func() []struct {
	name string
	p    pktSpec
	mss  int
} {
	type tc = struct {
		name string
		p    pktSpec
		mss  int
	}
	var cases []tc
	sizes := []struct {
		name string
		n    int
	}{
		{"exact", 4 * mss},
		{"tail", 4*mss + 101},
		{"mss+1", mss + 1},
		{"small", 500},
	}
	// FIN, PSH and CWR on the super-packet: CWR must stay on the first
	// segment only, FIN and PSH on the last only.
	const tcpFlags = tcpACK | tcpFIN | tcpPSH | tcpCWR
	kinds := []struct {
		name string
		p    pktSpec
	}{
		{"tcpv4", pktSpec{tcpOpts: tsOpts, flags: tcpFlags, seq: 1_000_000, ack: 77, id: 0x1234}},
		{"tcpv4 noopts", pktSpec{flags: tcpFlags, seq: 5, ack: 77, id: 9, noDF: true}},
		{"tcpv6", pktSpec{v6: true, tcpOpts: tsOpts, flags: tcpFlags, seq: 1_000_000, ack: 77, flowLabel: 0xabcde, tos: 0x02}},
		{"udpv4", pktSpec{udp: true, id: 0x4321}},
		{"udpv6", pktSpec{v6: true, udp: true}},
	}
	for _, k := range kinds {
		for _, s := range sizes {
			p := k.p
			p.payload = payload(s.n, byte(len(cases)))
			cases = append(cases, tc{k.name + " " + s.name, p, mss})
		}
	}
	return append(cases,
		// 60 bytes of IPv4 header and 60 of TCP: MaxHeaders.
		tc{"tcpv4 max headers", pktSpec{
			ipOpts: bytes.Repeat([]byte{1}, 40), tcpOpts: bytes.Repeat([]byte{1}, 40),
			flags: tcpACK | tcpPSH, seq: 3, id: 1, payload: payload(3000, 1),
		}, 1000},
		tc{"tcpv4 ip options", pktSpec{ipOpts: []byte{1, 1, 1, 0}, tcpOpts: tsOpts, payload: payload(3000, 2)}, 1000},
		tc{"tcpv4 seq and id wrap", pktSpec{tcpOpts: tsOpts, seq: 0xffff_ff00, id: 0xfffe, payload: payload(5000, 3)}, 1000},
		tc{"tcpv4 odd mss", pktSpec{tcpOpts: tsOpts, payload: payload(4*1385+7, 4)}, 1385},
		tc{"udpv4 odd mss", pktSpec{udp: true, payload: payload(3*1001+2, 5)}, 1001},
		tc{"tcpv6 mss smaller than headers", pktSpec{v6: true, tcpOpts: tsOpts, payload: payload(100, 6)}, 7},
	)
}()

// wantHead returns the headers segment i (at payload offset off) of the
// super-packet orig must have, except for the transport checksum, which is
// taken from seg and checked on its own.
func wantHead(orig, seg []byte, hl, i, off int, last bool) []byte {
	ipLen := ipHeaderLen(orig)
	want := clone(orig[:hl])
	if orig[0]>>4 == 6 {
		binary.BigEndian.PutUint16(want[4:], uint16(len(seg)-40))
	} else {
		binary.BigEndian.PutUint16(want[2:], uint16(len(seg)))
		binary.BigEndian.PutUint16(want[4:], binary.BigEndian.Uint16(orig[4:])+uint16(i))
		want[10], want[11] = 0, 0
		binary.BigEndian.PutUint16(want[10:], ^refSum(want[:ipLen]))
	}
	co := csumOffset(orig)
	if co == udpCsum {
		binary.BigEndian.PutUint16(want[ipLen+4:], uint16(len(seg)-ipLen))
	} else {
		seq := binary.BigEndian.Uint32(orig[ipLen+4:])
		binary.BigEndian.PutUint32(want[ipLen+4:], seq+uint32(off))
		if i > 0 {
			want[ipLen+tcpFlags] &^= tcpCWR
		}
		if !last {
			want[ipLen+tcpFlags] &^= tcpFIN | tcpPSH
		}
	}
	copy(want[ipLen+co:ipLen+co+2], seg[ipLen+co:])
	return want
}

// checkSegment checks seg, segment i of the super-packet orig (headers hl
// bytes long) whose body starts at payload offset off.
func checkSegment(t *testing.T, orig, seg []byte, hl, i, off int, last bool) {
	t.Helper()
	ipLen := ipHeaderLen(orig)
	if want := wantHead(orig, seg, hl, i, off, last); !bytes.Equal(seg[:hl], want) {
		t.Errorf("segment %d headers:\ngot  %x\nwant %x", i, seg[:hl], want)
	}
	if orig[0]>>4 == 4 && packet.Checksum(seg[:ipLen], 0) != 0 {
		t.Errorf("segment %d: IPv4 header checksum %#04x does not verify", i, binary.BigEndian.Uint16(seg[10:]))
	}
	if !l4ChecksumOK(seg) {
		t.Errorf("segment %d: transport checksum does not verify (reference sum)", i)
	}
	co := csumOffset(orig)
	if c := binary.BigEndian.Uint16(seg[ipLen+co:]); co == udpCsum && c == 0 {
		t.Errorf("segment %d: got UDP checksum 0, want 0xffff (RFC 768)", i)
	}
	if got, want := seg[hl:], orig[hl+off:hl+off+len(seg)-hl]; !bytes.Equal(got, want) {
		t.Errorf("segment %d body: got %d bytes differing from payload[%d:%d]", i, len(got), off, off+len(want))
	}
}

func TestSplit(t *testing.T) {
	var s Splitter // shared: Init must reset everything
	hbuf := make([]byte, MaxHeaders)
	for _, tc := range splitCases {
		t.Run(tc.name, func(t *testing.T) {
			h, pkt := superPacket(tc.p, tc.mss)
			orig := clone(pkt)
			if err := s.Init(h, pkt); err != nil {
				t.Fatalf("Init: %v", err)
			}
			hl := s.HeaderLen()
			if hl != int(h.HdrLen) {
				t.Fatalf("HeaderLen: got %d, want %d", hl, h.HdrLen)
			}
			pl := len(orig) - hl
			wantN := (pl + tc.mss - 1) / tc.mss
			if got := s.Segments(); got != wantN {
				t.Errorf("Segments: got %d, want %d", got, wantN)
			}
			var all []byte
			n := 0
			for {
				head, body, ok := s.Next(hbuf)
				if !ok {
					break
				}
				if n == wantN {
					t.Fatalf("Next: got more than %d segments", wantN)
				}
				off := len(all)
				wantLen := min(tc.mss, pl-off)
				if len(head) != hl || len(body) != wantLen {
					t.Fatalf("segment %d: got head %d, body %d bytes; want %d, %d", n, len(head), len(body), hl, wantLen)
				}
				// The body is the packet's own bytes, not a copy.
				if &body[0] != &pkt[hl+off] {
					t.Errorf("segment %d: body is not pkt[%d:]", n, hl+off)
				}
				seg := append(clone(head), body...)
				checkSegment(t, orig, seg, hl, n, off, off+len(body) == pl)
				all = append(all, body...)
				n++
			}
			if n != wantN {
				t.Errorf("Next calls: got %d segments, want %d", n, wantN)
			}
			if !bytes.Equal(all, orig[hl:]) {
				t.Errorf("bodies concatenated: got %d bytes, not the %d of the payload", len(all), pl)
			}
			if !bytes.Equal(pkt, orig) {
				t.Errorf("gather split changed the packet")
			}
			if _, _, ok := s.Next(hbuf); ok {
				t.Errorf("Next after the last segment: got ok")
			}
		})
	}
}

// TestSplitUDPZeroChecksum makes the middle segment's UDP checksum
// compute to zero, which must go on the wire as 0xffff (RFC 768; the
// kernel's __udp_gso_segment writes CSUM_MANGLED_0).
func TestSplitUDPZeroChecksum(t *testing.T) {
	hbuf := make([]byte, MaxHeaders)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const size = 1000
			p := pktSpec{v6: v6, udp: true, payload: payload(3*size, 1)}
			// segment returns segment i of p split, in one piece.
			segment := func(i int) []byte {
				h, pkt := superPacket(p, size)
				var s Splitter
				if err := s.Init(h, pkt); err != nil {
					t.Fatalf("Init: %v", err)
				}
				for j := 0; ; j++ {
					head, body, ok := s.Next(hbuf)
					if !ok {
						t.Fatalf("no segment %d", i)
					}
					if j == i {
						return append(clone(head), body...)
					}
				}
			}
			// Zero the segment's first payload word and its checksum
			// field, then put into that word what makes the sum 0xffff.
			p.payload[size], p.payload[size+1] = 0, 0
			seg := segment(1)
			ipLen := ipHeaderLen(seg)
			seg[ipLen+6], seg[ipLen+7] = 0, 0
			binary.BigEndian.PutUint16(p.payload[size:], 0xffff-refSum(append(pseudo(seg), seg[ipLen:]...)))
			seg = segment(1)
			if c := binary.BigEndian.Uint16(seg[ipLen+6:]); c != 0xffff {
				t.Errorf("UDP checksum: got %#04x, want 0xffff", c)
			}
			if !l4ChecksumOK(seg) {
				t.Errorf("UDP checksum does not verify")
			}
		})
	}
}

// TestSplitContiguous follows Next's contract for callers that need each
// segment in one piece: the head is copied over the bytes in front of the
// body, and the later segments must come out the same all the same.
func TestSplitContiguous(t *testing.T) {
	hbuf := make([]byte, MaxHeaders)
	for _, tc := range splitCases {
		t.Run(tc.name, func(t *testing.T) {
			h, pkt := superPacket(tc.p, tc.mss)
			orig := clone(pkt)
			var s Splitter
			if err := s.Init(h, pkt); err != nil {
				t.Fatalf("Init: %v", err)
			}
			hl := s.HeaderLen()
			for i, off := 0, 0; ; i++ {
				head, body, ok := s.Next(hbuf)
				if !ok {
					if off != len(orig)-hl {
						t.Fatalf("got %d payload bytes, want %d", off, len(orig)-hl)
					}
					break
				}
				at := cap(pkt) - cap(body) // body's offset in pkt
				if at-len(head) < 0 {
					t.Fatalf("segment %d: body at %d has no room for %d bytes of head", i, at, len(head))
				}
				copy(pkt[at-len(head):], head)
				seg := pkt[at-len(head) : at+len(body)]
				checkSegment(t, orig, seg, hl, i, off, off+len(body) == len(orig)-hl)
				off += len(body)
			}
		})
	}
}

func TestSplitNone(t *testing.T) {
	type tc struct {
		name string
		full []byte // with its checksum complete
	}
	cases := []tc{
		{"tcpv4", pktSpec{tcpOpts: tsOpts, payload: payload(1000, 1)}.build()},
		{"tcpv6", pktSpec{v6: true, payload: payload(999, 2)}.build()},
		{"udpv4", pktSpec{udp: true, payload: payload(333, 3)}.build()},
		{"udpv6", pktSpec{v6: true, udp: true, payload: payload(0, 4)}.build()},
		{"tcpv4 ip options", pktSpec{ipOpts: []byte{1, 1, 1, 0}, payload: payload(10, 5)}.build()},
	}
	// Packets whose checksum computes to 0, sent as 0xffff: RFC 768 for
	// UDP; for TCP, where 0 and 0xffff are the same sum (RFC 1624 §3),
	// because the kernel's skb_checksum_help does so.
	cases = append(cases,
		tc{"udpv4 zero checksum", zeroSum(pktSpec{udp: true, payload: payload(100, 6)})},
		tc{"udpv6 zero checksum", zeroSum(pktSpec{v6: true, udp: true, payload: payload(100, 6)})},
		tc{"tcpv4 zero checksum", zeroSum(pktSpec{tcpOpts: tsOpts, payload: payload(100, 7)})},
	)
	for _, c := range cases[len(cases)-3 : len(cases)-1] {
		if got := binary.BigEndian.Uint16(c.full[ipHeaderLen(c.full)+udpCsum:]); got != 0xffff {
			t.Fatalf("test packet %s: got UDP checksum %#04x, want 0xffff", c.name, got)
		}
	}

	var s Splitter
	hbuf := make([]byte, MaxHeaders)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ipLen := ipHeaderLen(c.full)
			co := csumOffset(c.full)
			pkt := partial(clone(c.full))
			h := Hdr{Flags: FlagNeedsCsum, CsumStart: uint16(ipLen), CsumOffset: uint16(co)}
			if err := s.Init(h, pkt); err != nil {
				t.Fatalf("Init: %v", err)
			}
			if !l4ChecksumOK(pkt) {
				t.Errorf("completed checksum %#04x does not verify", binary.BigEndian.Uint16(pkt[ipLen+co:]))
			}
			if c.name == "tcpv4 zero checksum" {
				// The builder writes what the fold gives (0); the
				// kernel's skb_checksum_help, and so Init, 0xffff.
				if got := binary.BigEndian.Uint16(pkt[ipLen+co:]); got != 0xffff {
					t.Errorf("TCP checksum: got %#04x, want 0xffff (CSUM_MANGLED_0)", got)
				}
				pkt[ipLen+co], pkt[ipLen+co+1] = 0, 0
			}
			if !bytes.Equal(pkt, c.full) {
				t.Errorf("completed packet:\ngot  %x\nwant %x", pkt, c.full)
			}
			checkNoneSegment(t, &s, pkt, hbuf)
		})
	}

	// Without FlagNeedsCsum the packet is left as it is, even a partial
	// checksum (the kernel only leaves one with the flag).
	for _, flags := range []uint8{0, FlagDataValid} {
		pkt := partial(cases[0].full)
		orig := clone(pkt)
		h := Hdr{Flags: flags, CsumStart: 20, CsumOffset: 16}
		if err := s.Init(h, pkt); err != nil {
			t.Fatalf("flags %#x: Init: %v", flags, err)
		}
		if !bytes.Equal(pkt, orig) {
			t.Errorf("flags %#x: Init changed the packet", flags)
		}
		checkNoneSegment(t, &s, pkt, hbuf)
	}
}

// checkNoneSegment checks that a frame without GSO is one segment: the
// packet itself.
func checkNoneSegment(t *testing.T, s *Splitter, pkt, hbuf []byte) {
	t.Helper()
	if got := s.Segments(); got != 1 {
		t.Errorf("Segments: got %d, want 1", got)
	}
	if got := s.HeaderLen(); got != 0 {
		t.Errorf("HeaderLen: got %d, want 0", got)
	}
	head, body, ok := s.Next(hbuf)
	if !ok || len(head) != 0 || len(body) != len(pkt) || (len(pkt) > 0 && &body[0] != &pkt[0]) {
		t.Errorf("Next: got head %d bytes, body %d bytes, ok %v; want 0, the packet (%d), true", len(head), len(body), ok, len(pkt))
	}
	if _, _, ok := s.Next(hbuf); ok {
		t.Errorf("second Next: got ok")
	}
}

func TestSplitErrors(t *testing.T) {
	good4 := pktSpec{tcpOpts: tsOpts, payload: payload(3000, 1)}
	good6 := pktSpec{v6: true, tcpOpts: tsOpts, payload: payload(3000, 2)}
	udp4 := pktSpec{udp: true, payload: payload(3000, 3)}
	type mod func(h *Hdr, pkt []byte) []byte
	cases := []struct {
		name string
		p    pktSpec
		mod  mod
		want error
	}{
		{"gso udp (ufo)", udp4, func(h *Hdr, p []byte) []byte { h.Type = TypeUDP; return p }, ErrGSOType},
		{"gso type 2", good4, func(h *Hdr, p []byte) []byte { h.Type = 2; return p }, ErrGSOType},
		{"gso type 6", good4, func(h *Hdr, p []byte) []byte { h.Type = 6; return p }, ErrGSOType},
		{"csum_start", good4, func(h *Hdr, p []byte) []byte { h.CsumStart = 24; return p }, ErrGSOHeader},
		{"csum_start v6", good6, func(h *Hdr, p []byte) []byte { h.CsumStart = 20; return p }, ErrGSOHeader},
		{"csum_offset tcp", good4, func(h *Hdr, p []byte) []byte { h.CsumOffset = 6; return p }, ErrGSOHeader},
		{"csum_offset udp", udp4, func(h *Hdr, p []byte) []byte { h.CsumOffset = 16; return p }, ErrGSOHeader},
		{"tcp type on udp", udp4, func(h *Hdr, p []byte) []byte { h.Type, h.CsumOffset = TypeTCPv4, 16; return p }, ErrGSOHeader},
		{"udp type on tcp", good4, func(h *Hdr, p []byte) []byte { h.Type, h.CsumOffset = TypeUDPL4, 6; return p }, ErrGSOHeader},
		{"tcpv6 type on ipv4", good4, func(h *Hdr, p []byte) []byte { h.Type = TypeTCPv6; return p }, ErrGSOHeader},
		{"tcpv4 type on ipv6", good6, func(h *Hdr, p []byte) []byte { h.Type = TypeTCPv4; return p }, ErrGSOHeader},
		{"ipv4 MF", good4, func(h *Hdr, p []byte) []byte { p[6] |= 0x20; return p }, ErrGSOHeader},
		{"ipv4 fragment offset", good4, func(h *Hdr, p []byte) []byte { p[7] = 1; return p }, ErrGSOHeader},
		{"size 0", good4, func(h *Hdr, p []byte) []byte { h.Size = 0; return p }, ErrGSOHeader},
		{"no needs_csum", good4, func(h *Hdr, p []byte) []byte { h.Flags = FlagDataValid; return p }, ErrGSOHeader},
		{"empty", good4, func(h *Hdr, p []byte) []byte { return p[:0] }, ErrGSOHeader},
		{"ipv4 truncated", good4, func(h *Hdr, p []byte) []byte { return p[:19] }, ErrGSOHeader},
		{"ipv6 truncated", good6, func(h *Hdr, p []byte) []byte { return p[:39] }, ErrGSOHeader},
		{"tcp header truncated", good4, func(h *Hdr, p []byte) []byte { return p[:39] }, ErrGSOHeader},
		{"tcp options truncated", good4, func(h *Hdr, p []byte) []byte { return p[:51] }, ErrGSOHeader},
		{"headers only", good4, func(h *Hdr, p []byte) []byte { return p[:52] }, ErrGSOHeader},
		{"udp headers only", udp4, func(h *Hdr, p []byte) []byte { return p[:28] }, ErrGSOHeader},
		{"tcp data offset past end", good4, func(h *Hdr, p []byte) []byte { p[32] = 15 << 4; return p[:70] }, ErrGSOHeader},
		{"tcp data offset < 5", good4, func(h *Hdr, p []byte) []byte { p[32] = 4 << 4; return p }, ErrGSOHeader},
		{"ihl < 5", good4, func(h *Hdr, p []byte) []byte { p[0] = 0x44; h.CsumStart = 16; return p }, ErrGSOHeader},
		{"ihl past end", good4, func(h *Hdr, p []byte) []byte { p[0] = 0x4f; h.CsumStart = 60; return p[:50] }, ErrGSOHeader},
		{"version 5", good4, func(h *Hdr, p []byte) []byte { p[0] = 0x55; return p }, ErrGSOHeader},
		{"ipv6 next header not tcp", good6, func(h *Hdr, p []byte) []byte { p[6] = 0; return p }, ErrGSOHeader},
		{"none: csum beyond packet", good4, func(h *Hdr, p []byte) []byte {
			*h = Hdr{Flags: FlagNeedsCsum, CsumStart: uint16(len(p)), CsumOffset: 0}
			return p
		}, ErrCsum},
		{"none: csum field half outside", good4, func(h *Hdr, p []byte) []byte {
			*h = Hdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: uint16(len(p) - 21)}
			return p
		}, ErrCsum},
		{"none: csum_start past end", good4, func(h *Hdr, p []byte) []byte {
			*h = Hdr{Flags: FlagNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}
			return p
		}, ErrCsum},
		{"none: empty", good4, func(h *Hdr, p []byte) []byte {
			*h = Hdr{Flags: FlagNeedsCsum}
			return p[:0]
		}, ErrCsum},
	}
	var s Splitter
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, pkt := superPacket(tc.p, 1000)
			pkt = tc.mod(&h, pkt)
			orig := clone(pkt)
			if err := s.Init(h, pkt); !errors.Is(err, tc.want) {
				t.Fatalf("Init(%+v): got %v, want %v", h, err, tc.want)
			}
			if !bytes.Equal(pkt, orig) {
				t.Errorf("failed Init changed the packet")
			}
		})
	}
}

func FuzzSplit(f *testing.F) {
	for _, tc := range splitCases {
		h, pkt := superPacket(tc.p, tc.mss)
		if len(pkt) > 1600 {
			continue // small seeds: minimizing what grows from big ones takes the fuzzer's time
		}
		f.Add(h.Flags, h.Type, h.HdrLen, h.Size, h.CsumStart, h.CsumOffset, pkt)
	}
	h, pkt := superPacket(pktSpec{tcpOpts: tsOpts, payload: payload(300, 1)}, 100)
	f.Add(h.Flags, h.Type, h.HdrLen, h.Size, h.CsumStart, h.CsumOffset, pkt)
	h, pkt = superPacket(pktSpec{v6: true, udp: true, payload: payload(301, 2)}, 1)
	f.Add(h.Flags, h.Type, h.HdrLen, h.Size, h.CsumStart, h.CsumOffset, pkt)
	f.Add(uint8(FlagNeedsCsum), uint8(TypeNone), uint16(0), uint16(0), uint16(20), uint16(16), pkt)
	f.Add(uint8(FlagNeedsCsum), uint8(TypeNone), uint16(0), uint16(0), uint16(1), uint16(3), []byte{1, 2, 3, 4, 5, 6})
	f.Add(uint8(FlagNeedsCsum), uint8(TypeTCPv4), uint16(0), uint16(1), uint16(20), uint16(16), []byte{0x45})

	hbuf := make([]byte, MaxHeaders)
	f.Fuzz(func(t *testing.T, flags, typ uint8, hdrLen, size, cs, co uint16, pkt []byte) {
		h := Hdr{Flags: flags, Type: typ, HdrLen: hdrLen, Size: size, CsumStart: cs, CsumOffset: co}
		orig := clone(pkt)
		var s Splitter
		if err := s.Init(h, pkt); err != nil {
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("failed Init (%v) changed the packet", err)
			}
			return
		}
		if typ&^TypeECN == TypeNone {
			if flags&FlagNeedsCsum != 0 {
				// The field now holds the complement of the sum from
				// csum_start on, taken with the field as it was, 0 sent
				// as 0xffff.
				want := ^refSum(orig[cs:])
				if want == 0 {
					want = 0xffff
				}
				at := int(cs) + int(co)
				if got := binary.BigEndian.Uint16(pkt[at:]); got != want {
					t.Fatalf("completed checksum: got %#04x, want %#04x", got, want)
				}
				copy(pkt[at:at+2], orig[at:])
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("Init changed more than the checksum field")
			}
			checkNoneSegment(t, &s, pkt, hbuf)
			return
		}
		hl := s.HeaderLen()
		if hl <= 0 || hl > MaxHeaders || hl >= len(pkt) {
			t.Fatalf("HeaderLen: got %d for a %d-byte packet", hl, len(pkt))
		}
		ipLen := int(cs)
		total, n := 0, 0
		for {
			head, body, ok := s.Next(hbuf)
			if !ok {
				break
			}
			if len(head) != hl || len(body) == 0 || len(body) > int(size) {
				t.Fatalf("segment %d: got head %d, body %d bytes; want %d, 1..%d", n, len(head), len(body), hl, size)
			}
			if !bytes.Equal(body, orig[hl+total:hl+total+len(body)]) {
				t.Fatalf("segment %d: body is not payload[%d:]", n, total)
			}
			seg := append(clone(head), body...)
			if len(seg) <= 0xffff {
				if seg[0]>>4 == 4 && packet.Checksum(seg[:ipLen], 0) != 0 {
					t.Fatalf("segment %d: IPv4 header checksum does not verify", n)
				}
				if ipHeaderLen(seg) == ipLen && !l4ChecksumOK(seg) {
					t.Fatalf("segment %d: transport checksum does not verify", n)
				}
				if c := binary.BigEndian.Uint16(seg[ipLen+int(co):]); co == udpCsum && c == 0 {
					t.Fatalf("segment %d: UDP checksum 0", n)
				}
			}
			total += len(body)
			n++
		}
		if total != len(pkt)-hl {
			t.Fatalf("bodies: got %d bytes, want %d", total, len(pkt)-hl)
		}
		if got := s.Segments(); got != n {
			t.Fatalf("Segments: got %d, want %d (the Next calls)", got, n)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("gather split changed the packet")
		}
	})
}

func TestSplitNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	hbuf := make([]byte, MaxHeaders)
	var s Splitter
	for _, tc := range splitCases {
		h, pkt := superPacket(tc.p, tc.mss)
		if a := testing.AllocsPerRun(100, func() {
			if err := s.Init(h, pkt); err != nil {
				t.Fatal(err)
			}
			for _, _, ok := s.Next(hbuf); ok; _, _, ok = s.Next(hbuf) {
			}
		}); a != 0 {
			t.Errorf("%s: got %v allocs/op, want 0", tc.name, a)
		}
	}
	full := pktSpec{tcpOpts: tsOpts, payload: payload(1000, 1)}.build()
	h := Hdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 16}
	if a := testing.AllocsPerRun(100, func() {
		if err := s.Init(h, full); err != nil {
			t.Fatal(err)
		}
		s.Next(hbuf)
	}); a != 0 {
		t.Errorf("none with needs_csum: got %v allocs/op, want 0", a)
	}
}

func BenchmarkSplit(b *testing.B) {
	// The largest super-packet the TUN hands over: 64 KiB of IP packet.
	cases := []struct {
		name string
		p    pktSpec
	}{
		{"tcpv4", pktSpec{tcpOpts: tsOpts, payload: payload(65535-52, 1)}},
		{"tcpv6", pktSpec{v6: true, tcpOpts: tsOpts, payload: payload(65535-72, 2)}},
		{"udpv4", pktSpec{udp: true, payload: payload(65535-28, 3)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, pkt := superPacket(c.p, mss)
			hbuf := make([]byte, MaxHeaders)
			var s Splitter
			b.SetBytes(int64(len(c.p.payload)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Init(h, pkt); err != nil {
					b.Fatal(err)
				}
				for _, _, ok := s.Next(hbuf); ok; _, _, ok = s.Next(hbuf) {
				}
			}
		})
	}
}

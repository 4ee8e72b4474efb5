package gso

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// splitContiguous splits a super-packet as a caller that needs contiguous
// packets does (head copied in front of body) and returns each segment in
// a buffer of its own, as they arrive at the receiving router.
func splitContiguous(tb testing.TB, h Hdr, super []byte) [][]byte {
	tb.Helper()
	pkt := clone(super)
	var s Splitter
	if err := s.Init(h, pkt); err != nil {
		tb.Fatalf("Init: %v", err)
	}
	var segs [][]byte
	hbuf := make([]byte, MaxHeaders)
	for {
		head, body, ok := s.Next(hbuf)
		if !ok {
			return segs
		}
		at := cap(pkt) - cap(body)
		copy(pkt[at-len(head):], head)
		segs = append(segs, clone(pkt[at-len(head):at+len(body)]))
	}
}

// tcpHeaderLen returns the IP + TCP header length of a TCP packet.
func tcpHeaderLen(pkt []byte) int {
	ipLen := ipHeaderLen(pkt)
	return ipLen + int(pkt[ipLen+12]>>4)*4
}

// wantMerged returns the super-packet that segs (as they were added) must
// become: the first's headers with the total length, the IPv4 header
// checksum, PSH from the last, and the partial checksum (the folded
// pseudo-header sum) the kernel expects with FlagNeedsCsum.
func wantMerged(segs [][]byte) []byte {
	first := segs[0]
	ipLen, hl := ipHeaderLen(first), tcpHeaderLen(first)
	m := clone(first)
	for _, s := range segs[1:] {
		m = append(m, s[hl:]...)
	}
	if m[0]>>4 == 6 {
		binary.BigEndian.PutUint16(m[4:], uint16(len(m)-40))
	} else {
		binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
		m[10], m[11] = 0, 0
		binary.BigEndian.PutUint16(m[10:], ^refSum(m[:ipLen]))
	}
	m[ipLen+tcpFlags] |= segs[len(segs)-1][ipLen+tcpFlags] & tcpPSH
	binary.BigEndian.PutUint16(m[ipLen+tcpCsum:], refSum(pseudo(m)))
	return m
}

// kernelComplete completes a partial checksum the way the kernel does
// (skb_checksum_help): the complement of the sum from csum_start on, the
// field included.
func kernelComplete(m []byte, h Hdr) []byte {
	m = clone(m)
	at := int(h.CsumStart) + int(h.CsumOffset)
	binary.BigEndian.PutUint16(m[at:], ^refSum(m[h.CsumStart:]))
	return m
}

// checkMerged checks frame i of c, which carries segs (copies of the
// packets as added).
func checkMerged(t *testing.T, c *Coalescer, i int, segs [][]byte) {
	t.Helper()
	fr := c.Frame(i)
	first := segs[0]
	ipLen, hl := ipHeaderLen(first), tcpHeaderLen(first)
	var h Hdr
	if err := h.Decode(fr[0]); err != nil {
		t.Fatalf("frame %d: header: %v", i, err)
	}
	want := Hdr{
		Flags: FlagNeedsCsum, Type: TypeTCPv4, HdrLen: uint16(hl), Size: uint16(len(first) - hl),
		CsumStart: uint16(ipLen), CsumOffset: tcpCsum,
	}
	if first[0]>>4 == 6 {
		want.Type = TypeTCPv6
	}
	if h != want {
		t.Errorf("frame %d: header: got %+v, want %+v", i, h, want)
	}
	m := bytes.Join(fr[1:], nil)
	if w := wantMerged(segs); !bytes.Equal(m, w) {
		t.Errorf("frame %d: merged packet:\ngot  %x\nwant %x", i, m[:min(len(m), 80)], w[:min(len(w), 80)])
	}
	if m[0]>>4 == 4 && packet.Checksum(m[:ipLen], 0) != 0 {
		t.Errorf("frame %d: IPv4 header checksum does not verify", i)
	}
	if !l4ChecksumOK(kernelComplete(m, h)) {
		t.Errorf("frame %d: TCP checksum completed as the kernel does does not verify", i)
	}
}

// checkFrames checks that c holds len(want) frames carrying want[i]
// packets each, of pkts (copies of the packets as added) in order: single
// packets unchanged behind an all-zero header, so that the kernel checks
// them as any packet, and runs merged.
func checkFrames(t *testing.T, c *Coalescer, pkts [][]byte, want []int) {
	t.Helper()
	got := make([]int, c.Len())
	for i := range got {
		got[i] = c.Segments(i)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("segments per frame: got %v, want %v", got, want)
	}
	k := 0
	for i, n := range want {
		fr := c.Frame(i)
		if len(fr) != n+1 || len(fr[0]) != HdrLen {
			t.Fatalf("frame %d: got %d parts (header %d bytes), want %d (%d)", i, len(fr), len(fr[0]), n+1, HdrLen)
		}
		if n == 1 {
			if !bytes.Equal(fr[0], make([]byte, HdrLen)) {
				t.Errorf("frame %d: single packet with header %x, want all zero", i, fr[0])
			}
			if !bytes.Equal(fr[1], pkts[k]) {
				t.Errorf("frame %d: single packet changed:\ngot  %x\nwant %x", i, fr[1], pkts[k])
			}
		} else {
			checkMerged(t, c, i, pkts[k:k+n])
		}
		k += n
	}
}

// addAll adds copies of pkts to c (the originals stay as they were, to
// compare with) and flushes it.
func addAll(c *Coalescer, pkts [][]byte) {
	for _, p := range pkts {
		c.Add(clone(p))
	}
	c.Flush()
}

func TestCoalesceRoundTrip(t *testing.T) {
	const flags = tcpACK | tcpPSH // what a sender's last segment of a write carries
	cases := []struct {
		name string
		p    pktSpec
		mss  int
	}{
		{"v4 exact", pktSpec{tcpOpts: tsOpts, flags: flags, seq: 7, ack: 9, id: 0x100, payload: payload(4*mss, 1)}, mss},
		{"v4 tail", pktSpec{tcpOpts: tsOpts, flags: flags, seq: 7, ack: 9, id: 0xffff, payload: payload(4*mss+101, 2)}, mss},
		{"v4 mss+1", pktSpec{tcpOpts: tsOpts, flags: tcpACK, payload: payload(mss+1, 3)}, mss},
		{"v4 small", pktSpec{tcpOpts: tsOpts, flags: flags, payload: payload(500, 4)}, mss},
		{"v4 no options", pktSpec{flags: flags, seq: 0xffff_f000, payload: payload(10000, 5)}, 1460},
		{"v4 without DF", pktSpec{noDF: true, tcpOpts: tsOpts, flags: flags, id: 0xfffd, payload: payload(5*mss, 6)}, mss},
		{"v4 64 KiB", pktSpec{tcpOpts: tsOpts, flags: flags, payload: payload(65535-52, 7)}, mss},
		{"v6 exact", pktSpec{v6: true, tcpOpts: tsOpts, flags: flags, flowLabel: 0x12345, payload: payload(4*1366, 8)}, 1366},
		{"v6 tail", pktSpec{v6: true, tcpOpts: tsOpts, flags: flags, payload: payload(4*1366+1, 9)}, 1366},
		{"v6 small", pktSpec{v6: true, tcpOpts: tsOpts, flags: flags, payload: payload(1, 10)}, 1366},
		{"v6 64 KiB", pktSpec{v6: true, tcpOpts: tsOpts, flags: flags, payload: payload(65535-72, 11)}, 1366},
	}
	var c Coalescer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Reset()
			h, super := superPacket(tc.p, tc.mss)
			segs := splitContiguous(t, h, super)
			addAll(&c, segs)
			if c.Len() != 1 {
				t.Fatalf("frames: got %d, want 1", c.Len())
			}
			fr := c.Frame(0)
			if len(segs) == 1 {
				checkFrames(t, &c, segs, []int{1})
				return
			}
			var got Hdr
			if err := got.Decode(fr[0]); err != nil {
				t.Fatal(err)
			}
			// The kernel's own header for the super-packet, but for the
			// hdr_len hint, which the kernel may round.
			want := h
			want.HdrLen = uint16(tcpHeaderLen(super))
			if got != want {
				t.Errorf("virtio-net header: got %+v, want %+v", got, want)
			}
			// The super-packet comes back byte for byte: the first
			// segment's IPv4 ID is the super-packet's, and the total
			// length, header checksum and partial TCP checksum are
			// those of the whole.
			if m := bytes.Join(fr[1:], nil); !bytes.Equal(m, super) {
				t.Errorf("merged packet differs from the super-packet:\ngot  %x\nwant %x", m[:80], super[:80])
			}
			checkFrames(t, &c, segs, []int{len(segs)})
		})
	}
}

func TestCoalesceTable(t *testing.T) {
	const sz = 1000
	base := pktSpec{tcpOpts: tsOpts, seq: 1000, ack: 5, id: 100}
	base6 := pktSpec{v6: true, tcpOpts: tsOpts, seq: 1000, ack: 5, flowLabel: 0x54321}
	type mod = func(*pktSpec)
	// seg returns segment i of a flow of sz-byte segments, changed by mods.
	seg := func(p pktSpec, i int, mods ...mod) []byte {
		p.seq += uint32(i * sz)
		p.id += uint16(i)
		p.payload = payload(sz, byte(i))
		for _, m := range mods {
			m(&p)
		}
		return p.build()
	}
	s4 := func(i int, mods ...mod) []byte { return seg(base, i, mods...) }
	s6 := func(i int, mods ...mod) []byte { return seg(base6, i, mods...) }
	flags := func(f uint8) mod { return func(p *pktSpec) { p.flags = f } }
	size := func(n int) mod { return func(p *pktSpec) { p.payload = p.payload[:n] } }
	seqAt := func(s uint32) mod { return func(p *pktSpec) { p.seq = base.seq + s } }
	// Changes after the checksums are computed.
	badTCP := func(b []byte) []byte { b[len(b)-1] ^= 0x40; return b }
	badIP := func(b []byte) []byte { b[10] ^= 1; return b }
	lenField := func(b []byte, d int) []byte {
		if b[0]>>4 == 6 {
			binary.BigEndian.PutUint16(b[4:], binary.BigEndian.Uint16(b[4:])+uint16(d))
			return b
		}
		binary.BigEndian.PutUint16(b[2:], binary.BigEndian.Uint16(b[2:])+uint16(d))
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], ^refSum(b[:20]))
		return b
	}
	flow := func(n, size int, p pktSpec) [][]byte {
		var out [][]byte
		for i := range n {
			q := p
			q.seq += uint32(i * size)
			q.id += uint16(i)
			q.payload = payload(size, byte(i))
			out = append(out, q.build())
		}
		return out
	}
	otherTS := []byte{1, 1, 8, 10, 0, 0, 0x12, 0x35, 0, 0, 0x56, 0x78}
	pk := func(b ...[]byte) [][]byte { return b }

	cases := []struct {
		name string
		pkts [][]byte
		want []int
	}{
		{"merge", pk(s4(0), s4(1), s4(2)), []int{3}},
		{"merge v6", pk(s6(0), s6(1), s6(2)), []int{3}},
		{"single", pk(s4(0)), []int{1}},
		{"sport", pk(s4(0), s4(1, func(p *pktSpec) { p.sport, p.dport = 40001, 443 })), []int{1, 1}},
		{"dport", pk(s4(0), s4(1, func(p *pktSpec) { p.sport, p.dport = 40000, 444 })), []int{1, 1}},
		{"src address", pk(s4(0), s4(1, func(p *pktSpec) { p.src, p.dst = netip.MustParseAddr("10.1.0.3"), dst4 })), []int{1, 1}},
		{"dst address", pk(s4(0), s4(1, func(p *pktSpec) { p.src, p.dst = src4, netip.MustParseAddr("10.2.0.3") })), []int{1, 1}},
		{"v6 dst address", pk(s6(0), s6(1, func(p *pktSpec) { p.src, p.dst = src6, netip.MustParseAddr("fd00:2::3") })), []int{1, 1}},
		{"seq gap", pk(s4(0), s4(1, seqAt(sz+1))), []int{1, 1}},
		{"seq overlap", pk(s4(0), s4(1, seqAt(sz-1))), []int{1, 1}},
		{"retransmission", pk(s4(0), s4(0)), []int{1, 1}},
		{"ack", pk(s4(0), s4(1, func(p *pktSpec) { p.ack++ })), []int{1, 1}},
		{"window", pk(s4(0), s4(1, func(p *pktSpec) { p.win = 1000 })), []int{1, 1}},
		{"timestamps", pk(s4(0), s4(1, func(p *pktSpec) { p.tcpOpts = otherTS })), []int{1, 1}},
		{"options dropped", pk(s4(0), s4(1, func(p *pktSpec) { p.tcpOpts = nil })), []int{1, 1}},
		{"psh on first", pk(s4(0, flags(tcpACK|tcpPSH)), s4(1)), []int{1, 1}},
		{"psh on middle", pk(s4(0), s4(1, flags(tcpACK|tcpPSH)), s4(2)), []int{2, 1}},
		{"psh on last", pk(s4(0), s4(1), s4(2, flags(tcpACK|tcpPSH))), []int{3}},
		{"psh on last v6", pk(s6(0), s6(1, flags(tcpACK|tcpPSH))), []int{2}},
		{"syn", pk(s4(0), s4(1, flags(tcpACK|tcpSYN))), []int{1, 1}},
		{"fin", pk(s4(0), s4(1, flags(tcpACK|tcpFIN))), []int{1, 1}},
		{"fin on first", pk(s4(0, flags(tcpACK|tcpFIN)), s4(1)), []int{1, 1}},
		{"rst", pk(s4(0), s4(1, flags(tcpACK|tcpRST))), []int{1, 1}},
		{"urg", pk(s4(0), s4(1, flags(tcpACK|tcpURG), func(p *pktSpec) { p.urg = 10 })), []int{1, 1}},
		{"urgent pointer without urg", pk(s4(0), s4(1, func(p *pktSpec) { p.urg = 10 })), []int{1, 1}},
		{"ece", pk(s4(0), s4(1, flags(tcpACK|0x40))), []int{1, 1}},
		{"cwr", pk(s4(0), s4(1, flags(tcpACK|tcpCWR))), []int{1, 1}},
		{"cwr on first", pk(s4(0, flags(tcpACK|tcpCWR)), s4(1)), []int{1, 1}},
		{"no ack", pk(s4(0), s4(1, flags(tcpPSH))), []int{1, 1}},
		{"pure ack second", pk(s4(0), s4(1, size(0))), []int{1, 1}},
		{"pure ack first", pk(s4(0, size(0)), s4(0)), []int{1, 1}},
		{"second larger", pk(s4(0, size(500)), s4(1, seqAt(500))), []int{1, 1}},
		{"short middle", pk(s4(0), s4(1, size(500)), s4(2, seqAt(1500))), []int{2, 1}},
		{"short last", pk(s4(0), s4(1), s4(2, size(1))), []int{3}},
		{"bad tcp checksum on second", pk(s4(0), badTCP(s4(1))), []int{1, 1}},
		{"bad tcp checksum on middle", pk(s4(0), badTCP(s4(1)), s4(2)), []int{1, 1, 1}},
		{"bad tcp checksum on first", pk(badTCP(s4(0)), s4(1), s4(2)), []int{1, 2}},
		{"bad tcp checksum on last", pk(s4(0), s4(1), badTCP(s4(2))), []int{2, 1}},
		{"bad tcp checksum v6", pk(s6(0), badTCP(s6(1)), s6(2)), []int{1, 1, 1}},
		{"bad ip checksum on second", pk(s4(0), badIP(s4(1))), []int{1, 1}},
		{"bad ip checksum on first", pk(badIP(s4(0)), s4(1), s4(2)), []int{1, 2}},
		{"total length short on second", pk(s4(0), lenField(s4(1), -1)), []int{1, 1}},
		{"total length long on second", pk(s4(0), lenField(s4(1), 1)), []int{1, 1}},
		{"total length on first", pk(lenField(s4(0), 1), s4(1), s4(2)), []int{1, 2}},
		{"payload length on second v6", pk(s6(0), lenField(s6(1), 1)), []int{1, 1}},
		{"payload length on first v6", pk(lenField(s6(0), -1), s6(1), s6(2)), []int{1, 2}},
		{"ip options", pk(s4(0, func(p *pktSpec) { p.ipOpts = []byte{1, 1, 1, 0} }), s4(1, func(p *pktSpec) { p.ipOpts = []byte{1, 1, 1, 0} })), []int{1, 1}},
		{"ip options on second", pk(s4(0), s4(1, func(p *pktSpec) { p.ipOpts = []byte{1, 1, 1, 0} })), []int{1, 1}},
		{"fragment MF", pk(s4(0), s4(1, func(p *pktSpec) { p.frag = 0x2000 })), []int{1, 1}},
		{"fragment offset", pk(s4(0), s4(1, func(p *pktSpec) { p.noDF, p.frag = true, 100 })), []int{1, 1}},
		{"fragment first", pk(s4(0, func(p *pktSpec) { p.noDF, p.frag = true, 0x2000 }), s4(1, func(p *pktSpec) { p.noDF = true })), []int{1, 1}},
		{"no DF, ids incrementing", pk(s4(0, func(p *pktSpec) { p.noDF = true }), s4(1, func(p *pktSpec) { p.noDF = true }), s4(2, func(p *pktSpec) { p.noDF = true })), []int{3}},
		{"no DF, ids fixed", pk(s4(0, func(p *pktSpec) { p.noDF = true }), s4(1, func(p *pktSpec) { p.noDF, p.id = true, base.id })), []int{1, 1}},
		{"no DF, ids skip", pk(s4(0, func(p *pktSpec) { p.noDF = true }), s4(1, func(p *pktSpec) { p.noDF, p.id = true, base.id+2 })), []int{1, 1}},
		{"DF, ids fixed", pk(s4(0), s4(1, func(p *pktSpec) { p.id = base.id }), s4(2, func(p *pktSpec) { p.id = base.id })), []int{3}},
		// The kernel's GRO does not look at the reserved flag bit either.
		{"reserved flag bit", pk(s4(0), s4(1, func(p *pktSpec) { p.frag = 0x8000 })), []int{2}},
		{"DF on first only", pk(s4(0), s4(1, func(p *pktSpec) { p.noDF = true })), []int{1, 1}},
		{"tos", pk(s4(0), s4(1, func(p *pktSpec) { p.tos = 3 })), []int{1, 1}},
		{"ttl", pk(s4(0), s4(1, func(p *pktSpec) { p.ttl = 63 })), []int{1, 1}},
		{"v6 flow label", pk(s6(0), s6(1, func(p *pktSpec) { p.flowLabel++ })), []int{1, 1}},
		{"v6 traffic class", pk(s6(0), s6(1, func(p *pktSpec) { p.tos = 3 })), []int{1, 1}},
		{"v6 hop limit", pk(s6(0), s6(1, func(p *pktSpec) { p.ttl = 1 })), []int{1, 1}},
		{"v4 then v6", pk(s4(0), s6(1)), []int{1, 1}},
		{"udp", pk(pktSpec{udp: true, payload: payload(sz, 0)}.build(), pktSpec{udp: true, payload: payload(sz, 1)}.build()), []int{1, 1}},
		{"udp v6", pk(pktSpec{v6: true, udp: true, payload: payload(sz, 0)}.build(), pktSpec{v6: true, udp: true, payload: payload(sz, 1)}.build()), []int{1, 1}},
		{"not ip", pk([]byte{0, 1, 2, 3}, []byte{}, make([]byte, 60)), []int{1, 1, 1}},
		{"truncated tcp", pk(s4(0)[:30], s4(0)[:51]), []int{1, 1}},
		{"after truncated", pk(s4(0)[:51], s4(1), s4(2)), []int{1, 2}},
		{"over MaxSegments", flow(MaxSegments+6, 100, base), []int{MaxSegments, 6}},
		{"exactly MaxSegments", flow(MaxSegments+1, 100, base), []int{MaxSegments, 1}},
		// 52 + 46*1400 = 64452 bytes; a 47th would pass 65535.
		{"over 64 KiB", flow(50, 1400, base), []int{46, 4}},
		{"over 64 KiB v6", flow(50, 1400, base6), []int{46, 4}},
		{
			"interleaved flows",
			pk(s4(0), s4(1), s4(2),
				s4(0, func(p *pktSpec) { p.sport, p.dport = 40001, 443 }),
				s4(1, func(p *pktSpec) { p.sport, p.dport = 40001, 443 }),
				s4(3)),
			[]int{3, 2, 1},
		},
		{"runs back to back", pk(s4(0), s4(1), s4(2, flags(tcpACK|tcpPSH)), s4(3), s4(4)), []int{3, 2}},
	}
	var c Coalescer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Reset()
			addAll(&c, tc.pkts)
			checkFrames(t, &c, tc.pkts, tc.want)
		})
	}

	// With TrustChecksums, segments whose TCP checksum is wrong merge like
	// any other (the tunnel vouches for them; the kernel recomputes the
	// merged packet's), while a bad IPv4 header checksum or length still
	// keeps a packet apart.
	trusted := []struct {
		name string
		pkts [][]byte
		want []int
	}{
		{"bad tcp checksum on first", pk(badTCP(s4(0)), s4(1), s4(2)), []int{3}},
		{"bad tcp checksum on middle", pk(s4(0), badTCP(s4(1)), s4(2)), []int{3}},
		{"bad tcp checksum v6", pk(s6(0), badTCP(s6(1)), s6(2)), []int{3}},
		{"bad ip checksum on second", pk(s4(0), badIP(s4(1))), []int{1, 1}},
		{"total length short on second", pk(s4(0), lenField(s4(1), -1)), []int{1, 1}},
	}
	c = Coalescer{TrustChecksums: true}
	for _, tc := range trusted {
		t.Run("trusted/"+tc.name, func(t *testing.T) {
			c.Reset()
			addAll(&c, tc.pkts)
			got := make([]int, c.Len())
			for i := range got {
				got[i] = c.Segments(i)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("segments per frame: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCoalesceLenFlush(t *testing.T) {
	var c Coalescer
	c.Flush() // nothing open
	if c.Len() != 0 {
		t.Fatalf("empty: got %d frames, want 0", c.Len())
	}
	h, super := superPacket(pktSpec{tcpOpts: tsOpts, payload: payload(3*mss, 1)}, mss)
	segs := splitContiguous(t, h, super)
	for i, s := range segs {
		c.Add(clone(s))
		// The open run is not done: the next Add may extend it.
		if got := c.Done(); got != 0 || c.Len() != 1 {
			t.Fatalf("after %d segments: Done %d Len %d, want 0 and 1", i+1, got, c.Len())
		}
	}
	c.Flush()
	if c.Done() != 1 {
		t.Fatalf("after Flush: Done %d, want 1", c.Done())
	}
	c.Flush() // a second Flush changes nothing
	checkFrames(t, &c, segs, []int{3})
	// A packet after a Flush opens a new frame even if it would
	// continue the run.
	more := pktSpec{tcpOpts: tsOpts, seq: uint32(3 * mss), id: 3, payload: payload(mss, 2)}.build()
	c.Add(clone(more))
	if c.Done() != 1 || c.Len() != 2 {
		t.Fatalf("new run: Done %d Len %d, want 1 and 2", c.Done(), c.Len())
	}
	c.Flush()
	checkFrames(t, &c, append(segs, more), []int{3, 1})
}

func TestCoalesceReset(t *testing.T) {
	h4, super4 := superPacket(pktSpec{tcpOpts: tsOpts, payload: payload(20*mss, 1)}, mss)
	h6, super6 := superPacket(pktSpec{v6: true, tcpOpts: tsOpts, payload: payload(10*mss+5, 2)}, mss)
	udp := pktSpec{udp: true, payload: payload(100, 3)}.build()
	batch1 := append(splitContiguous(t, h4, super4), udp)
	batch2 := append(append([][]byte{udp}, splitContiguous(t, h6, super6)...), splitContiguous(t, h4, super4)[:5]...)

	var c Coalescer
	addAll(&c, batch1)
	checkFrames(t, &c, batch1, []int{20, 1})
	c.Reset()
	if c.Len() != 0 {
		t.Fatalf("after Reset: got %d frames, want 0", c.Len())
	}
	addAll(&c, batch2)
	checkFrames(t, &c, batch2, []int{1, 11, 5})

	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	// Steady state: the Coalescer's slices have grown to the largest
	// batch. The packets are restored each time because Flush rewrites
	// the first of each run.
	work := make([][]byte, len(batch1)+len(batch2))
	for i := range work {
		work[i] = make([]byte, 0, 1500)
	}
	if a := testing.AllocsPerRun(100, func() {
		for _, batch := range [][][]byte{batch1, batch2} {
			c.Reset()
			for i, p := range batch {
				w := append(work[i][:0], p...)
				c.Add(w)
			}
			c.Flush()
		}
	}); a != 0 {
		t.Errorf("got %v allocs/op, want 0", a)
	}
}

// sameRun reports why p (the idx'th of a run that starts with first) could
// not be merged, or nil: the merge rules of Coalescer's doc, written out
// on their own.
func sameRun(first, p []byte, idx int, last bool) error {
	v6 := first[0]>>4 == 6
	if len(first) < 20 || first[0]>>4 != p[0]>>4 {
		return fmt.Errorf("version")
	}
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	if first[0] != p[0] || (!v6 && first[0] != 0x45) {
		return fmt.Errorf("IP header length")
	}
	hl := tcpHeaderLen(first)
	if tcpHeaderLen(p) != hl || len(p) <= hl || len(first) <= hl {
		return fmt.Errorf("header lengths or no payload")
	}
	if v6 {
		if p[6] != packet.ProtoTCP || !bytes.Equal(p[:4], first[:4]) || !bytes.Equal(p[6:40], first[6:40]) {
			return fmt.Errorf("IPv6 header")
		}
		for _, q := range [][]byte{first, p} {
			if int(binary.BigEndian.Uint16(q[4:])) != len(q)-40 {
				return fmt.Errorf("IPv6 payload length")
			}
		}
	} else {
		if p[9] != packet.ProtoTCP || p[1] != first[1] || p[8] != first[8] || p[9] != first[9] || !bytes.Equal(p[12:20], first[12:20]) {
			return fmt.Errorf("IPv4 header")
		}
		// No fragments, the same DF; the reserved bit is not looked
		// at, as in the kernel's GRO (inet_gro_receive).
		ff, pf := binary.BigEndian.Uint16(first[6:]), binary.BigEndian.Uint16(p[6:])
		if ff&0x3fff != 0 || pf&0x3fff != 0 || (ff^pf)&0x4000 != 0 {
			return fmt.Errorf("IPv4 fragment or DF")
		}
		if ff&0x4000 == 0 && binary.BigEndian.Uint16(p[4:]) != binary.BigEndian.Uint16(first[4:])+uint16(idx) {
			return fmt.Errorf("IPv4 ID without DF")
		}
		for _, q := range [][]byte{first, p} {
			if int(binary.BigEndian.Uint16(q[2:])) != len(q) || packet.Checksum(q[:20], 0) != 0 {
				return fmt.Errorf("IPv4 total length or header checksum")
			}
		}
	}
	ft, pt := first[ipLen:hl], p[ipLen:hl]
	if !bytes.Equal(ft[0:4], pt[0:4]) || !bytes.Equal(ft[8:13], pt[8:13]) || !bytes.Equal(ft[14:16], pt[14:16]) || !bytes.Equal(ft[18:], pt[18:]) {
		return fmt.Errorf("TCP header")
	}
	mss := len(first) - hl
	if binary.BigEndian.Uint32(pt[4:]) != binary.BigEndian.Uint32(ft[4:])+uint32(idx*mss) {
		return fmt.Errorf("sequence number")
	}
	if ft[13] != tcpACK || (pt[13] != tcpACK && !(last && pt[13] == tcpACK|tcpPSH)) {
		return fmt.Errorf("TCP flags %#x, %#x", ft[13], pt[13])
	}
	if len(p)-hl > mss || (!last && len(p)-hl != mss) {
		return fmt.Errorf("segment size")
	}
	if !l4ChecksumOK(first) || !l4ChecksumOK(p) {
		return fmt.Errorf("TCP checksum")
	}
	return nil
}

// fuzzPackets splits data into up to 8 packets, each preceded by a
// 16-bit length. The first byte is a mask: packet i, if bit i is set, gets
// its IP length field and its IPv4 header and TCP checksums made right,
// so that the fuzzer reaches the merge rules past the checksum checks.
func fuzzPackets(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	mask := data[0]
	data = clone(data[1:]) // fixup must not change the fuzzer's input
	var pkts [][]byte
	for len(data) >= 2 && len(pkts) < 8 {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
		p := data[2 : 2+n]
		if mask&(1<<len(pkts)) != 0 {
			fixup(p)
		}
		pkts = append(pkts, p)
		data = data[2+n:]
	}
	return pkts
}

// fixup makes p's length field, IPv4 header checksum and TCP checksum
// right, where p has room for them.
func fixup(p []byte) {
	if len(p) < 20 {
		return
	}
	var ipLen int
	switch p[0] >> 4 {
	case 4:
		ipLen = int(p[0]&0x0f) * 4
		if ipLen < 20 || ipLen > len(p) {
			return
		}
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:ipLen]))
		if p[9] != packet.ProtoTCP {
			return
		}
	case 6:
		if len(p) < 40 {
			return
		}
		ipLen = 40
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		if p[6] != packet.ProtoTCP {
			return
		}
	default:
		return
	}
	if len(p) < ipLen+20 {
		return
	}
	p[ipLen+16], p[ipLen+17] = 0, 0
	binary.BigEndian.PutUint16(p[ipLen+16:], ^refSum(append(pseudo(p), p[ipLen:]...)))
}

func fuzzInput(mask byte, pkts [][]byte) []byte {
	b := []byte{mask}
	for _, p := range pkts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

func FuzzCoalesce(f *testing.F) {
	small := pktSpec{tcpOpts: tsOpts, seq: 1, payload: payload(40*3+7, 1), flags: tcpACK | tcpPSH}
	for _, p := range []pktSpec{small, {v6: true, payload: payload(30*4, 2)}, {noDF: true, id: 0xffff, payload: payload(50, 3)}} {
		h, super := superPacket(p, 40)
		segs := splitContiguous(f, h, super)
		f.Add(fuzzInput(0, segs))
		f.Add(fuzzInput(0xff, segs))
		f.Add(fuzzInput(0, append(segs[:2:2], segs[0], segs[1])))
	}
	f.Add(fuzzInput(0xff, [][]byte{{0x45}, {}, {0x60, 0, 0, 0}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x45})

	f.Fuzz(func(t *testing.T, data []byte) {
		pkts := fuzzPackets(data)
		orig := make([][]byte, len(pkts))
		for i, p := range pkts {
			orig[i] = clone(p)
		}
		var c Coalescer
		for _, p := range pkts {
			c.Add(p)
		}
		c.Flush()
		k := 0
		for i := range c.Len() {
			fr, n := c.Frame(i), c.Segments(i)
			if n < 1 || n > MaxSegments || len(fr) != n+1 || k+n > len(pkts) {
				t.Fatalf("frame %d: %d segments, %d parts, %d packets left", i, n, len(fr), len(pkts)-k)
			}
			// The frame is the packets themselves: the first whole,
			// then the tails (bodies) of the others.
			if len(fr[1]) != len(pkts[k]) || (len(fr[1]) > 0 && &fr[1][0] != &pkts[k][0]) {
				t.Fatalf("frame %d: first part is not packet %d", i, k)
			}
			total := len(fr[1])
			for j := 2; j <= n; j++ {
				p, b := pkts[k+j-1], fr[j]
				if len(b) == 0 || len(b) > len(p) || &b[len(b)-1] != &p[len(p)-1] {
					t.Fatalf("frame %d: part %d is not the tail of packet %d", i, j, k+j-1)
				}
				total += len(b)
			}
			if n == 1 {
				if !bytes.Equal(fr[0], make([]byte, HdrLen)) || !bytes.Equal(pkts[k], orig[k]) {
					t.Fatalf("frame %d: single packet: header %x, changed %v", i, fr[0], !bytes.Equal(pkts[k], orig[k]))
				}
				k++
				continue
			}
			run := orig[k : k+n]
			for j, p := range run[1:] {
				if err := sameRun(run[0], p, j+1, j+2 == n); err != nil {
					t.Fatalf("frame %d: packet %d merged after %d: %v", i, k+j+1, k, err)
				}
			}
			if total > 65535 || total != len(run[0])+sumBodies(run) {
				t.Fatalf("frame %d: %d bytes", i, total)
			}
			checkMerged(t, &c, i, run)
			k += n
		}
		if k != len(pkts) {
			t.Fatalf("frames carry %d packets, want %d", k, len(pkts))
		}
	})
}

// sumBodies is the payload of all but the first packet of a run.
func sumBodies(run [][]byte) int {
	n := 0
	hl := tcpHeaderLen(run[0])
	for _, p := range run[1:] {
		n += len(p) - hl
	}
	return n
}

// benchFlow is what one super-packet of a sender becomes: 45 segments of
// 1386 bytes, as the receiving router gets them.
func benchFlow(tb testing.TB) [][]byte {
	h, super := superPacket(pktSpec{tcpOpts: tsOpts, payload: payload(45*mss, 1)}, mss)
	return splitContiguous(tb, h, super)
}

func TestCoalesceNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	segs := benchFlow(t)
	first := clone(segs[0])
	var c Coalescer
	if a := testing.AllocsPerRun(100, func() {
		copy(segs[0], first) // Flush rewrote its headers
		c.Reset()
		for _, s := range segs {
			c.Add(s)
		}
		c.Flush()
	}); a != 0 {
		t.Errorf("got %v allocs/op, want 0", a)
	}
	if c.Len() != 1 || c.Segments(0) != 45 {
		t.Errorf("got %d frames, first of %d segments; want 1 of 45", c.Len(), c.Segments(0))
	}
}

func BenchmarkCoalesce(b *testing.B) {
	segs := benchFlow(b)
	hl := tcpHeaderLen(segs[0])
	first := clone(segs[0][:hl])
	var c Coalescer
	b.SetBytes(int64(45 * mss))
	b.ReportAllocs()
	for b.Loop() {
		copy(segs[0], first) // Flush rewrote the headers
		c.Reset()
		for _, s := range segs {
			c.Add(s)
		}
		c.Flush()
	}
	if c.Len() != 1 {
		b.Fatalf("got %d frames, want 1", c.Len())
	}
}

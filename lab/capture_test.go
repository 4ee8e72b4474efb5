package lab

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// espFrame builds an Ethernet/IPv4/UDP frame to ESPPort carrying payload.
func espFrame(src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF: not a fragment
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], src.AsSlice())
	copy(ip[16:20], dst.AsSlice())
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:2], ESPPort)
	binary.BigEndian.PutUint16(udp[2:4], ESPPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return b
}

func espHdr(spi, seq uint32) []byte {
	b := make([]byte, 8+16+16) // header, some ciphertext, ICV
	binary.BigEndian.PutUint32(b[0:4], spi)
	binary.BigEndian.PutUint32(b[4:8], seq)
	return b
}

func TestCaptureFrames(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	c := &ESPCapture{seen: map[ESPKey]int{}, sas: map[saKey]*SAUse{}, times: map[ESPKey][]time.Time{}, first: map[ESPKey]time.Time{}, done: make(chan struct{})}
	now := time.Now()
	for _, f := range [][]byte{
		espFrame(a, b, espHdr(0x1001, 1)),
		espFrame(a, b, espHdr(0x1001, 2)),
		espFrame(a, b, espHdr(0x1002, 1)),                               // a new SA may start at 1 again
		espFrame(b, a, espHdr(0x1001, 1)),                               // the same SPI the other way: another SA
		espFrame(a, b, espHdr(0x1001, 2)),                               // reused: a duplicate
		espFrame(a, b, []byte{0xff}),                                    // NAT keepalive (RFC 3948 §2.3)
		espFrame(a, b, append([]byte{0, 0, 0, 0}, make([]byte, 20)...)), // non-ESP marker (§2.2)
		{1, 2, 3}, // runt
	} {
		c.frame(f, 0, now)
	}
	other := espFrame(a, b, espHdr(0x1001, 3))
	binary.BigEndian.PutUint16(other[14+20+2:], 4789) // VXLAN, not ESP
	c.frame(other, 0, now)
	frag := espFrame(a, b, espHdr(0x1001, 4))
	binary.BigEndian.PutUint16(frag[14+6:], 0x2000) // more fragments
	c.frame(frag, 0, now)
	// A UDP GSO frame: three datagrams of 40, 40 and 20 bytes in one buffer.
	gsoPayload := append(append(espHdr(0x1003, 1), espHdr(0x1003, 2)...), espHdr(0x1003, 3)[:20]...)
	c.frame(espFrame(a, b, gsoPayload), 40, now)

	close(c.done)
	c.closing.Store(true)
	res := CaptureResult{Packets: c.packets, NonESP: c.nonESP}
	if res.Packets != 8 || res.NonESP != 2 {
		t.Errorf("got %d ESP packets, %d other, want 8 and 2", res.Packets, res.NonESP)
	}
	dup := ESPKey{Src: a, Dst: b, SPI: 0x1001, Seq: 2}
	if len(c.times) != 1 || len(c.times[dup]) != 2 {
		t.Errorf("duplicates %v, want only %v twice", c.times, dup)
	}
	if len(c.sas) != 4 {
		t.Errorf("got %d SAs, want 4", len(c.sas))
	}
	if s := c.sas[saKey{a, b, 0x1003}]; s == nil || s.Packets != 3 || s.MinSeq != 1 || s.MaxSeq != 3 {
		t.Errorf("SA a→b 0x1003 (one GSO frame): got %+v, want 3 packets, seq 1..3", s)
	}
	if s := c.sas[saKey{a, b, 0x1001}]; s == nil || s.Packets != 3 || s.MinSeq != 1 || s.MaxSeq != 2 {
		t.Errorf("SA a→b 0x1001: got %+v, want 3 packets, seq 1..2", s)
	}
}

func TestSegmentSize(t *testing.T) {
	hdr := func(gsoType uint8, size uint16) []byte {
		h := make([]byte, vnetHdrLen)
		h[1] = gsoType
		binary.NativeEndian.PutUint16(h[4:6], size)
		return h
	}
	for _, tc := range []struct {
		name string
		h    []byte
		want int
	}{
		{"plain frame", hdr(0, 0), 0},
		{"udp gso", hdr(virtioGSOUDPL4, 1444), 1444},
		{"udp gso with ecn bit", hdr(virtioGSOUDPL4|0x80, 1444), 1444},
		{"tcpv4 gso is not udp", hdr(1, 1448), 0},
	} {
		if got := segmentSize(tc.h); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestUDPCounters(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 2964 35 0 2952 7 0 0 0 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"UdpLite: 0 0 0 0 0 0 0 0 0\n"
	got := strings.Join(udpCounters(snmp, "InErrors", "RcvbufErrors", "NoPorts"), " ")
	if want := "Udp.NoPorts=35 Udp.RcvbufErrors=7"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestIPChecksum(t *testing.T) {
	// A well-known example header (checksum field zeroed): 0xb861.
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := ipChecksum(h); got != 0xb861 {
		t.Errorf("got %#04x, want 0xb861", got)
	}
}

func TestStreamWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	s := &Stream{}
	// 10 datagrams, 10 ms apart; 3, 4 and 5 lost; each arrives 1 ms later.
	for i := range 10 {
		s.sent = append(s.sent, t0.Add(time.Duration(i)*10*ms))
		s.sendErrs = append(s.sendErrs, false)
		var a time.Time
		if i < 3 || i > 5 {
			a = t0.Add(time.Duration(i)*10*ms + ms)
		}
		s.arrived = append(s.arrived, a)
	}
	st := s.Window(time.Time{}, time.Time{})
	if st.Sent != 10 || st.Received != 7 || st.Lost != 3 || st.LongestBurst != 3 {
		t.Errorf("got %s, want 10 sent, 7 received, 3 lost in one burst", st)
	}
	if st.LongestGap != 40*ms || !st.GapStart.Equal(t0.Add(21*ms)) {
		t.Errorf("longest gap %v at %v, want 40ms at +21ms", st.LongestGap, st.GapStart.Sub(t0))
	}
	st = s.Window(t0.Add(60*ms), time.Time{})
	if st.Sent != 4 || st.Lost != 0 || st.LongestGap != 10*ms {
		t.Errorf("window from +60ms: got %s, want 4 sent, none lost, gap 10ms", st)
	}
	// Lost at the end of the window: the gap runs to the last send.
	st = s.Window(t0, t0.Add(60*ms))
	if st.Lost != 3 || st.LongestGap != 29*ms {
		t.Errorf("window to +60ms: got %s, want 3 lost, gap 29ms", st)
	}
}

//go:build linux

package udp

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestPrepareGroups: which messages share a GSO slot. Runs to one
// destination with the first message's size group; a shorter message ends
// its run; another destination, a bad address, a longer message, or the
// segment and byte limits start a new slot.
func TestPrepareGroups(t *testing.T) {
	d1 := netip.MustParseAddrPort("127.0.0.1:4500")
	d2 := netip.MustParseAddrPort("127.0.0.2:4500")
	bad := netip.MustParseAddrPort("[::1]:4500") // wrong family for an IPv4 socket
	mk := func(spec ...any) []Msg {
		var out []Msg
		for i := 0; i < len(spec); i += 2 {
			out = append(out, Msg{Buf: make([]byte, spec[i].(int)), Addr: spec[i+1].(netip.AddrPort)})
		}
		return out
	}
	many := func(n, size int) []any {
		var s []any
		for range n {
			s = append(s, size, d1)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		msgs  []Msg
		plain int
		gso   bool
		want  []int // messages per slot
	}{
		{"one run", mk(1400, d1, 1400, d1, 1400, d1), 0, true, []int{3}},
		{"short last ends the run", mk(1400, d1, 1400, d1, 900, d1, 1400, d1), 0, true, []int{3, 1}},
		{"longer starts a slot", mk(900, d1, 1400, d1, 1400, d1), 0, true, []int{1, 2}},
		{"destination change", mk(1400, d1, 1400, d2, 1400, d2, 1400, d1), 0, true, []int{1, 2, 1}},
		{"bad address breaks the run", mk(1400, d1, 1400, bad, 1400, d1), 0, true, []int{1, 1}},
		{"empty datagrams stay alone", mk(0, d1, 0, d1), 0, true, []int{1, 1}},
		{"gso off", mk(1400, d1, 1400, d1), 0, false, []int{1, 1}},
		{"plain prefix", mk(1400, d1, 1400, d1, 1400, d1, 1400, d1), 2, true, []int{1, 1, 2}},
		{"segment limit", mk(many(gsoMaxSegments+1, 100)...), 0, true, []int{gsoMaxSegments, 1}},
		{"byte limit", mk(many(50, 1400)...), 0, true, []int{gsoMaxBytes / 1400, 50 - gsoMaxBytes/1400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tx txBatch
			tx.init(128, 2 /* AF_INET */, false)
			tx.gso.Store(tc.gso)
			tx.prepare(tc.msgs, tc.plain)
			got := tx.cnt[:tx.n]
			if len(got) != len(tc.want) {
				t.Fatalf("slots: got %v, want %v", got, tc.want)
			}
			for k := range got {
				if got[k] != tc.want[k] {
					t.Fatalf("slots: got %v, want %v", got, tc.want)
				}
				if ctl := tx.hdrs[k].Hdr.Controllen; (got[k] > 1) != (ctl > 0) {
					t.Errorf("slot %d of %d messages: control length %d", k, got[k], ctl)
				}
			}
			tx.release()
		})
	}
}

// TestGSOToGRO: a GSO sender and a GRO receiver over loopback. The
// receiver gets runs coalesced (Segment set) and, split by Segment, exactly
// the datagrams sent; a receiver without GRO gets them one by one.
func TestGSOToGRO(t *testing.T) {
	for _, local := range []netip.AddrPort{lo4, lo6} {
		t.Run(local.Addr().String(), func(t *testing.T) {
			a := listen(t, Config{Local: local})
			b := listen(t, Config{Local: local})
			if gso, _ := a.Offloads(); !gso {
				t.Skip("kernel has no UDP_SEGMENT (Linux 4.18+)")
			}
			if err := b.SetGRO(true); err != nil {
				t.Skipf("kernel has no UDP_GRO (Linux 5.0+): %v", err)
			}
			if _, gro := b.Offloads(); !gro {
				t.Fatal("Offloads: gro false after SetGRO(true)")
			}
			var out []Msg
			for i := range 40 {
				size := 1400
				if i == 39 {
					size = 333
				}
				out = append(out, Msg{Buf: payload(uint32(i), size), Addr: b.LocalAddr()})
			}
			if n, err := a.WriteBatch(out); n != len(out) || err != nil {
				t.Fatalf("WriteBatch: got %d, %v; want %d, nil", n, err, len(out))
			}
			for i, m := range out {
				if m.N != len(m.Buf) {
					t.Errorf("msg %d: N got %d, want %d", i, m.N, len(m.Buf))
				}
			}
			in := recvBufs(8, 65535)
			var got []Msg
			coalesced := false
			for len(got) < len(out) {
				n, err := b.ReadBatch(in)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range in[:n] {
					if m.Truncated {
						t.Fatalf("truncated %d-byte message", m.N)
					}
					if m.Segment == 0 {
						got = append(got, Msg{Buf: bytes.Clone(m.Buf[:m.N]), N: m.N, Addr: m.Addr})
						continue
					}
					coalesced = true
					for p := m.Buf[:m.N]; len(p) > 0; {
						l := min(len(p), m.Segment)
						got = append(got, Msg{Buf: bytes.Clone(p[:l]), N: l, Addr: m.Addr})
						p = p[l:]
					}
				}
			}
			if !coalesced {
				t.Errorf("no message came coalesced (Segment 0 on all): GSO or GRO not in effect")
			}
			checkReceived(t, got, out, a.LocalAddr())

			// A receiver without GRO gets the same datagrams one by one.
			c := listen(t, Config{Local: local})
			for i := range out {
				out[i].Addr = c.LocalAddr()
			}
			if n, err := a.WriteBatch(out); n != len(out) || err != nil {
				t.Fatalf("WriteBatch: got %d, %v", n, err)
			}
			got = readAll(t, c, len(out), 2048)
			for _, m := range got {
				if m.Segment != 0 {
					t.Fatalf("Segment %d without GRO, want 0", m.Segment)
				}
			}
			checkReceived(t, got, out, a.LocalAddr())
		})
	}
}

// TestNoGSO: Config.NoGSO keeps WriteBatch to one datagram per slot.
func TestNoGSO(t *testing.T) {
	a := listen(t, Config{Local: lo4, NoGSO: true})
	if gso, _ := a.Offloads(); gso {
		t.Fatal("Offloads: gso true with NoGSO")
	}
	b := listen(t, Config{Local: lo4})
	out := []Msg{{Buf: payload(1, 1000), Addr: b.LocalAddr()}, {Buf: payload(2, 1000), Addr: b.LocalAddr()}}
	if n, err := a.WriteBatch(out); n != 2 || err != nil {
		t.Fatalf("WriteBatch: got %d, %v", n, err)
	}
	checkReceived(t, readAll(t, b, 2, 2048), out, a.LocalAddr())
}

func TestGROSize(t *testing.T) {
	// Built by hand: one SOL_UDP/UDP_GRO control message with 1234.
	b := make([]byte, oobSize)
	putSegment(b, 1234)
	b[12] = 104 // Type: UDP_GRO (UDP_SEGMENT is 103); Level stays SOL_UDP
	if got := groSize(b); got != 1234 {
		t.Errorf("groSize: got %d, want 1234", got)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{{"empty", nil}, {"short", b[:8]}, {"other type", func() []byte { c := bytes.Clone(b); c[12] = 1; return c }()},
		{"bad length", func() []byte { c := bytes.Clone(b); c[0] = 200; return c }()}} {
		if got := groSize(tc.b); got != 0 {
			t.Errorf("%s: groSize got %d, want 0", tc.name, got)
		}
	}
}

// TestGSOLongerThanPath: segments longer than the path MTU make the kernel
// refuse the UDP_SEGMENT send (EINVAL); WriteBatch resends the run one
// datagram at a time, which the kernel fragments (the socket never sets DF),
// and nothing is lost. GSO stays on for later batches.
func TestGSOLongerThanPath(t *testing.T) {
	_, a, b := vethConns(t, Config{})
	if gso, _ := a.Offloads(); !gso {
		t.Skip("kernel has no UDP_SEGMENT (Linux 4.18+)")
	}
	out := []Msg{
		{Buf: payload(1, 1000), Addr: b.LocalAddr()}, // a run that fits: sent with GSO
		{Buf: payload(2, 1000), Addr: b.LocalAddr()},
		{Buf: payload(3, 2000), Addr: b.LocalAddr()}, // a run longer than the 1500-byte veth
		{Buf: payload(4, 2000), Addr: b.LocalAddr()},
		{Buf: payload(5, 2000), Addr: b.LocalAddr()},
		{Buf: payload(6, 500), Addr: b.LocalAddr()},
		{Buf: payload(7, 500), Addr: b.LocalAddr()},
	}
	if n, err := a.WriteBatch(out); n != len(out) || err != nil {
		t.Fatalf("WriteBatch: got %d, %v; want %d, nil", n, err, len(out))
	}
	for i, m := range out {
		if m.N != len(m.Buf) {
			t.Errorf("msg %d: N got %d, want %d", i, m.N, len(m.Buf))
		}
	}
	checkReceived(t, readAll(t, b, len(out), 4096), out, a.LocalAddr())
	if a.tx.gsoFail != 1 {
		t.Errorf("refused GSO groups: got %d, want 1", a.tx.gsoFail)
	}
	if gso, _ := a.Offloads(); !gso {
		t.Errorf("GSO off after EINVAL, want still on (only EIO turns it off)")
	}
}

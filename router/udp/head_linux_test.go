//go:build linux

package udp

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Tests of Msg.Head, the gather write: a datagram is Head||Buf, sent from
// two iovecs. The wire tests run between two namespaces over veth (MTU
// 1500, like an underlay), so they need root.

// wire is the datagram m stands for.
func wire(m Msg) []byte {
	return append(append([]byte{}, m.Head...), m.Buf...)
}

// hmsg returns a message of an h-byte Head and a b-byte Buf to dst, tagged
// with id so a swap or a misplaced segment boundary shows. nil for 0 bytes.
func hmsg(id uint32, h, b int, dst netip.AddrPort) Msg {
	m := Msg{Addr: dst}
	if h > 0 {
		m.Head = payload(id|0x80000000, h)
	}
	if b > 0 {
		m.Buf = payload(id, b)
	}
	return m
}

// TestPrepareHeads: with heads, messages group by len(Head)+len(Buf), each
// slot's iovecs hold its messages' Head||Buf back to back, the segment
// size is the first message's, and release drops every iovec's reference.
func TestPrepareHeads(t *testing.T) {
	d1 := netip.MustParseAddrPort("127.0.0.1:4789")
	d2 := netip.MustParseAddrPort("127.0.0.2:4789")
	// mk builds messages from (head, buf) pairs, alternating destinations
	// when alt is set so that nothing can group.
	mk := func(alt bool, hb ...int) []Msg {
		var out []Msg
		for i := 0; i < len(hb); i += 2 {
			d := d1
			if alt && i/2%2 == 1 {
				d = d2
			}
			out = append(out, hmsg(uint32(i/2), hb[i], hb[i+1], d))
		}
		return out
	}
	many := func(n, h, b int) []int {
		var s []int
		for range n {
			s = append(s, h, b)
		}
		return s
	}
	const batch = 128
	for _, tc := range []struct {
		name    string
		msgs    []Msg
		plain   int
		gso     bool
		want    []int // messages per slot
		wantIov []int // iovecs per slot
	}{
		{"split does not matter, only the sum", mk(false, 50, 1350, 0, 1400, 1400, 0, 14, 1386), 0, true, []int{4}, []int{6}},
		{"same Buf, longer Head starts a slot", mk(false, 0, 1400, 50, 1400, 50, 1400), 0, true, []int{1, 2}, []int{1, 4}},
		{"shorter with a head ends the run", mk(false, 50, 1350, 50, 1350, 50, 900, 50, 1350), 0, true, []int{3, 1}, []int{6, 2}},
		{"head-only messages group", mk(false, 60, 0, 60, 0, 0, 60), 0, true, []int{3}, []int{3}},
		{"empty datagram stays alone, one iovec", mk(false, 0, 0, 0, 0), 0, true, []int{1, 1}, []int{1, 1}},
		{"gso off", mk(false, 50, 1350, 50, 1350), 0, false, []int{1, 1}, []int{2, 2}},
		{"plain prefix", mk(false, 50, 1350, 50, 1350, 50, 1350), 1, true, []int{1, 2}, []int{2, 4}},
		{"byte limit counts heads", mk(false, many(50, 50, 1386)...), 0, true,
			[]int{gsoMaxBytes / 1436, 50 - gsoMaxBytes/1436}, []int{2 * (gsoMaxBytes / 1436), 2 * (50 - gsoMaxBytes/1436)}},
		{"segment limit", mk(false, many(gsoMaxSegments+1, 8, 8)...), 0, true,
			[]int{gsoMaxSegments, 1}, []int{2 * gsoMaxSegments, 2}},
		{"full batch of two-iovec messages", mk(true, many(batch, 50, 100)...), 0, true,
			func() []int { s := make([]int, batch); fill(s, 1); return s }(),
			func() []int { s := make([]int, batch); fill(s, 2); return s }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tx txBatch
			tx.init(batch, 2 /* AF_INET */, false)
			if len(tx.iovs) != maxIovsPerMsg*batch {
				t.Fatalf("iovecs: got %d, want %d", len(tx.iovs), maxIovsPerMsg*batch)
			}
			tx.gso.Store(tc.gso)
			tx.prepare(tc.msgs, tc.plain)
			if got := tx.cnt[:tx.n]; fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("messages per slot: got %v, want %v", got, tc.want)
			}
			niov := 0
			for k := range tx.n {
				h := &tx.hdrs[k].Hdr
				if int(h.Iovlen) != tc.wantIov[k] {
					t.Errorf("slot %d: got %d iovecs, want %d", k, h.Iovlen, tc.wantIov[k])
				}
				niov += int(h.Iovlen)
				var got, want []byte
				for _, iov := range unsafe.Slice(h.Iov, h.Iovlen) {
					got = append(got, unsafe.Slice(iov.Base, iov.Len)...)
				}
				first := tc.msgs[tx.idx[k]]
				for _, m := range tc.msgs[tx.idx[k] : tx.idx[k]+tx.cnt[k]] {
					want = append(want, wire(m)...)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("slot %d: iovecs hold %d bytes, want the %d of its messages' Head||Buf", k, len(got), len(want))
				}
				if tx.cnt[k] > 1 {
					seg := *(*uint16)(unsafe.Pointer(&tx.oob[k*oobSize+unix.CmsgLen(0)]))
					if int(seg) != first.size() {
						t.Errorf("slot %d: segment size got %d, want %d", k, seg, first.size())
					}
				}
			}
			if niov != tx.niov {
				t.Errorf("iovecs filled: slots use %d, niov %d", niov, tx.niov)
			}
			tx.release()
			for j, iov := range tx.iovs {
				if iov.Base != nil {
					t.Fatalf("iovec %d still points at a caller's buffer after release", j)
				}
			}
		})
	}
}

func fill(s []int, v int) {
	for i := range s {
		s[i] = v
	}
}

// writePinned calls c.WriteBatch on a thread pinned to one CPU (and thrown
// away afterwards). veth hands a packet to the receive backlog of the CPU
// that sends it (RPS is off in a fresh namespace), so one CPU means one
// queue and the datagrams arrive in the order sent, which UDP itself does
// not promise and the Head tests check.
func writePinned(t *testing.T, ns netns.NsHandle, c *Conn, msgs []Msg) (n int, err error) {
	t.Helper()
	var pinErr error
	inNS(t, ns, func() {
		var set unix.CPUSet
		if pinErr = unix.SchedGetaffinity(0, &set); pinErr != nil {
			return
		}
		cpu := 0
		for cpu < len(set)*64 && !set.IsSet(cpu) {
			cpu++
		}
		var one unix.CPUSet
		one.Set(cpu)
		if pinErr = unix.SchedSetaffinity(0, &one); pinErr != nil {
			return
		}
		n, err = c.WriteBatch(msgs)
	})
	if pinErr != nil {
		t.Fatalf("pin the sending thread to one CPU: %v", pinErr)
	}
	return n, err
}

// sendInOrder sends out from a (pinned, see writePinned), expects every
// message sent with N = len(Head)+len(Buf), and checks that b receives
// exactly each message's Head||Buf, in order, from a.
func sendInOrder(t *testing.T, ns netns.NsHandle, a, b *Conn, out []Msg) {
	t.Helper()
	if n, err := writePinned(t, ns, a, out); n != len(out) || err != nil {
		t.Fatalf("WriteBatch: got %d, %v; want %d, nil", n, err, len(out))
	}
	for i, m := range out {
		if m.N != m.size() {
			t.Errorf("msg %d: N got %d, want len(Head)+len(Buf) = %d+%d", i, m.N, len(m.Head), len(m.Buf))
		}
	}
	got := readAll(t, b, len(out), 4096)
	for i, m := range got {
		want := wire(out[i])
		if m.Addr != a.LocalAddr() || m.Truncated || !bytes.Equal(m.Buf, want) {
			t.Errorf("datagram %d: got %d bytes (truncated %v) from %v, want %d bytes (Head %d + Buf %d) from %v",
				i, m.N, m.Truncated, m.Addr, len(want), len(out[i].Head), len(out[i].Buf), a.LocalAddr())
		}
	}
}

// TestHeadMixed: one batch to one destination, GSO on, mixing messages
// with and without Head (and Head-only ones) in runs of equal sizes. Each
// run goes as one GSO group, and the receiver gets each datagram as
// exactly Head||Buf, in order.
func TestHeadMixed(t *testing.T) {
	ns1, a, b := vethConns(t, Config{})
	if gso, _ := a.Offloads(); !gso {
		t.Skip("kernel has no UDP_SEGMENT (Linux 4.18+)")
	}
	dst := b.LocalAddr()
	hb := []int{
		50, 950, 0, 1000, 1000, 0, 14, 986, 50, 950, 50, 400, // a run of 1000, ended by a shorter one
		0, 1200, 50, 1150, 50, 1150, // a run of 1200
		30, 0, // alone
		0, 700, 64, 636, // a run of 700
	}
	var out []Msg
	for i := 0; i < len(hb); i += 2 {
		out = append(out, hmsg(uint32(i/2), hb[i], hb[i+1], dst))
	}
	sendInOrder(t, ns1, a, b, out)
	if a.tx.gsoSent != 3 || a.tx.gsoFail != 0 {
		t.Errorf("GSO groups sent, refused: got %d, %d; want 3, 0", a.tx.gsoSent, a.tx.gsoFail)
	}
}

// TestHeadGSOGroup is the VXLAN shape: 40 messages of a 50-byte Head (the
// headers) and a 1386-byte Buf (a payload left in the 64 KiB buffer it was
// read into), and a shorter last one, make one GSO group: the receiver
// gets 40 datagrams of 1436 bytes and the short one. Without GSO (NoGSO)
// the same datagrams arrive.
func TestHeadGSOGroup(t *testing.T) {
	for _, noGSO := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoGSO=%v", noGSO), func(t *testing.T) {
			ns1, a, b := vethConns(t, Config{NoGSO: noGSO})
			gso, _ := a.Offloads()
			if !noGSO && !gso {
				t.Skip("kernel has no UDP_SEGMENT (Linux 4.18+)")
			}
			const (
				n    = 40
				head = 50
				body = 1386
				last = 555
			)
			tun := payload(7, 64<<10) // one read buffer: the bodies stay in it
			heads := make([]byte, (n+1)*head)
			out := make([]Msg, n+1)
			for i := range out {
				h := heads[i*head : (i+1)*head]
				copy(h, payload(uint32(1000+i), head))
				size := body
				if i == n {
					size = last
				}
				out[i] = Msg{Head: h, Buf: tun[i*body : i*body+size], Addr: b.LocalAddr()}
			}
			sendInOrder(t, ns1, a, b, out)
			wantGroups := uint64(1)
			if noGSO {
				wantGroups = 0
			}
			if a.tx.gsoSent != wantGroups || a.tx.gsoFail != 0 {
				t.Errorf("GSO groups sent, refused: got %d, %d; want %d, 0", a.tx.gsoSent, a.tx.gsoFail, wantGroups)
			}
		})
	}
}

// TestHeadOnlyAndBufOnly: a message with only a Head, one with only a Buf,
// and an empty one, each alone and together in a batch, with GSO on.
func TestHeadOnlyAndBufOnly(t *testing.T) {
	ns1, a, b := vethConns(t, Config{})
	dst := b.LocalAddr()
	headOnly := hmsg(1, 120, 0, dst)
	bufOnly := hmsg(2, 0, 1400, dst)
	empty := Msg{Addr: dst}
	emptyHead := Msg{Head: []byte{}, Buf: []byte{}, Addr: dst} // non-nil but empty: same as nil
	for _, tc := range []struct {
		name string
		out  []Msg
	}{
		{"head only", []Msg{headOnly}},
		{"buf only", []Msg{bufOnly}},
		{"empty", []Msg{empty}},
		{"together", []Msg{headOnly, bufOnly, empty, emptyHead, headOnly, headOnly, bufOnly}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sendInOrder(t, ns1, a, b, tc.out)
		})
	}
}

// TestHeadGSOLongerThanPath: a GSO group of Head+Buf segments longer than
// the 1500-byte veth is refused (EINVAL, see TestGSOLongerThanPath) and
// resent one datagram per message; each still arrives as Head||Buf, in
// order (the kernel fragments them: the socket never sets DF).
func TestHeadGSOLongerThanPath(t *testing.T) {
	ns1, a, b := vethConns(t, Config{})
	if gso, _ := a.Offloads(); !gso {
		t.Skip("kernel has no UDP_SEGMENT (Linux 4.18+)")
	}
	dst := b.LocalAddr()
	out := []Msg{
		hmsg(1, 50, 950, dst), hmsg(2, 0, 1000, dst), // fits: one GSO group
		hmsg(3, 50, 1950, dst), hmsg(4, 2000, 0, dst), hmsg(5, 0, 2000, dst), hmsg(6, 50, 1000, dst), // refused, resent
		hmsg(7, 50, 450, dst), hmsg(8, 0, 500, dst), // fits again
	}
	sendInOrder(t, ns1, a, b, out)
	if a.tx.gsoSent != 2 || a.tx.gsoFail != 1 {
		t.Errorf("GSO groups sent, refused: got %d, %d; want 2, 1", a.tx.gsoSent, a.tx.gsoFail)
	}
}

//go:build linux

package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	lo4 = netip.MustParseAddrPort("127.0.0.1:0")
	lo6 = netip.MustParseAddrPort("[::1]:0")
)

// listen opens a Conn closed when the test ends. A watchdog closes it if
// the test hangs in ReadBatch (a lost datagram), so the test fails instead
// of timing out the whole package.
func listen(t testing.TB, cfg Config) *Conn {
	t.Helper()
	c, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen(%+v): %v", cfg, err)
	}
	dog := time.AfterFunc(30*time.Second, func() { c.Close() })
	t.Cleanup(func() {
		dog.Stop()
		c.Close()
	})
	return c
}

// payload returns a datagram of size bytes tagged with id (if it fits) and
// filled with a pattern derived from id, so corruption or a swap between
// buffers shows.
func payload(id uint32, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(int(id)*7 + i)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(b, id)
	}
	return b
}

func recvBufs(n, size int) []Msg {
	msgs := make([]Msg, n)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	return msgs
}

// readAll reads until want datagrams arrived and returns copies of them.
func readAll(t testing.TB, c *Conn, want, bufSize int) []Msg {
	t.Helper()
	msgs := recvBufs(min(want, DefaultBatchSize), bufSize)
	var out []Msg
	for len(out) < want {
		n, err := c.ReadBatch(msgs[:min(len(msgs), want-len(out))])
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(out), want, err)
		}
		if n < 1 {
			t.Fatalf("ReadBatch returned %d datagrams and no error", n)
		}
		for _, m := range msgs[:n] {
			cp := m
			cp.Buf = bytes.Clone(m.Buf[:m.N])
			out = append(out, cp)
		}
	}
	return out
}

func TestListenLocalAddr(t *testing.T) {
	for _, tc := range []struct {
		local  string
		want   netip.Addr // want address; port must be non-zero
		family int
		v6only bool
	}{
		{"127.0.0.1:0", netip.MustParseAddr("127.0.0.1"), unix.AF_INET, false},
		{"0.0.0.0:0", netip.IPv4Unspecified(), unix.AF_INET, false},
		{"[::ffff:127.0.0.1]:0", netip.MustParseAddr("127.0.0.1"), unix.AF_INET, false},
		{"[::1]:0", netip.IPv6Loopback(), unix.AF_INET6, true},
		{"[::]:0", netip.IPv6Unspecified(), unix.AF_INET6, false},
	} {
		t.Run(tc.local, func(t *testing.T) {
			c := listen(t, Config{Local: netip.MustParseAddrPort(tc.local)})
			got := c.LocalAddr()
			if got.Addr() != tc.want || got.Port() == 0 {
				t.Errorf("LocalAddr: got %v, want %v with a non-zero port", got, tc.want)
			}
			if c.family != tc.family || c.v6only != tc.v6only {
				t.Errorf("family, v6only: got %d, %v; want %d, %v", c.family, c.v6only, tc.family, tc.v6only)
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		c := listen(t, Config{})
		if got := c.LocalAddr(); !got.Addr().IsUnspecified() || got.Port() == 0 {
			t.Errorf("LocalAddr: got %v, want an unspecified address with a non-zero port", got)
		}
	})
}

func TestListenErrors(t *testing.T) {
	c := listen(t, Config{Local: lo4})
	_, err := Listen(Config{Local: c.LocalAddr()})
	if !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), c.LocalAddr().String()) {
		t.Errorf("second Listen on %v: got %v, want EADDRINUSE naming the address", c.LocalAddr(), err)
	}
	_, err = Listen(Config{Local: lo4, BatchSize: MaxBatchSize + 1})
	if err == nil || !strings.Contains(err.Error(), "BatchSize") {
		t.Errorf("BatchSize %d: got %v, want an error naming BatchSize", MaxBatchSize+1, err)
	}
	_, err = Listen(Config{Local: netip.MustParseAddrPort("[fe80::1%nosuchif0]:0")})
	if err == nil {
		t.Errorf("Listen on an unknown zone: got nil error")
	}
}

func sockopt(t *testing.T, c *Conn, level, opt int) int {
	t.Helper()
	var v int
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), level, opt) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatalf("getsockopt %d/%d: %v", level, opt, err)
	}
	return v
}

func TestSockopts(t *testing.T) {
	for _, local := range []netip.AddrPort{lo4, lo6, netip.MustParseAddrPort("[::]:0")} {
		t.Run(local.String(), func(t *testing.T) {
			c := listen(t, Config{Local: local})
			if got := sockopt(t, c, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER); got != unix.IP_PMTUDISC_DONT {
				t.Errorf("IP_MTU_DISCOVER: got %d, want IP_PMTUDISC_DONT (%d)", got, unix.IP_PMTUDISC_DONT)
			}
			if c.family == unix.AF_INET6 {
				if got := sockopt(t, c, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER); got != unix.IPV6_PMTUDISC_DONT {
					t.Errorf("IPV6_MTU_DISCOVER: got %d, want IPV6_PMTUDISC_DONT (%d)", got, unix.IPV6_PMTUDISC_DONT)
				}
			}
			if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_REUSEADDR); got != 0 {
				t.Errorf("SO_REUSEADDR: got %d, want 0", got)
			}
			if os.Geteuid() == 0 { // only root can force past rmem_max/wmem_max
				// The kernel doubles the requested size for its bookkeeping.
				for _, o := range []struct {
					name string
					opt  int
				}{{"SO_RCVBUF", unix.SO_RCVBUF}, {"SO_SNDBUF", unix.SO_SNDBUF}} {
					if got := sockopt(t, c, unix.SOL_SOCKET, o.opt); got < DefaultSocketBuffer {
						t.Errorf("%s: got %d, want >= %d", o.name, got, DefaultSocketBuffer)
					}
				}
			}
		})
	}
	t.Run("negative buffer leaves the default", func(t *testing.T) {
		def, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo4))
		if err != nil {
			t.Fatal(err)
		}
		defer def.Close()
		f, err := def.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		want, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil {
			t.Fatal(err)
		}
		c := listen(t, Config{Local: lo4, RecvBuffer: -1})
		if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF); got != want {
			t.Errorf("SO_RCVBUF with RecvBuffer -1: got %d, want the default %d", got, want)
		}
	})
}

// TestRoundTripBatches sends batches of every size from 1 to BatchSize and
// checks each datagram's bytes, size and source.
func TestRoundTripBatches(t *testing.T) {
	for _, local := range []netip.AddrPort{lo4, lo6} {
		t.Run(local.Addr().String(), func(t *testing.T) {
			const batch = DefaultBatchSize
			a := listen(t, Config{Local: local})
			b := listen(t, Config{Local: local})
			id := uint32(0)
			for n := 1; n <= batch; n++ {
				out := make([]Msg, n)
				for i := range out {
					id++
					out[i] = Msg{Buf: payload(id, 4+int(id*37)%1400), Addr: b.LocalAddr()}
				}
				sent, err := a.WriteBatch(out)
				if sent != n || err != nil {
					t.Fatalf("WriteBatch of %d: got %d, %v; want %d, nil", n, sent, err, n)
				}
				for i, m := range out {
					if m.N != len(m.Buf) {
						t.Errorf("batch %d msg %d: N got %d, want %d", n, i, m.N, len(m.Buf))
					}
				}
				got := readAll(t, b, n, 2048)
				checkReceived(t, got, out, a.LocalAddr())
			}
		})
	}
}

// checkReceived checks that got holds exactly the payloads of want (in any
// order: UDP does not promise it), each from src and not truncated.
func checkReceived(t testing.TB, got, want []Msg, src netip.AddrPort) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("received %d datagrams, want %d", len(got), len(want))
	}
	pending := make(map[string]int)
	for _, m := range want {
		pending[string(m.Buf)]++
	}
	for i, m := range got {
		if m.Addr != src {
			t.Errorf("datagram %d: source got %v, want %v", i, m.Addr, src)
		}
		if m.Truncated || m.N != len(m.Buf) {
			t.Errorf("datagram %d: N %d truncated %v, want N = %d and not truncated", i, m.N, m.Truncated, len(m.Buf))
		}
		if pending[string(m.Buf)] == 0 {
			t.Errorf("datagram %d (%d bytes, %x...): not sent, or received twice", i, len(m.Buf), m.Buf[:min(8, len(m.Buf))])
			continue
		}
		pending[string(m.Buf)]--
	}
}

// TestFullBatch fills a whole DefaultBatchSize batch at once and checks
// that ReadBatch takes all of it in as few calls as the kernel allows, and
// that WriteBatch splits a longer slice into batches.
func TestFullBatch(t *testing.T) {
	a := listen(t, Config{Local: lo4})
	b := listen(t, Config{Local: lo4})
	const n = 3*DefaultBatchSize + 5
	out := make([]Msg, n)
	for i := range out {
		out[i] = Msg{Buf: payload(uint32(i), 1400), Addr: b.LocalAddr()}
	}
	if sent, err := a.WriteBatch(out); sent != n || err != nil {
		t.Fatalf("WriteBatch of %d: got %d, %v; want %d, nil", n, sent, err, n)
	}
	// More slots than the batch size: one call fills at most BatchSize.
	in := recvBufs(n, 1500)
	got, err := b.ReadBatch(in)
	if err != nil || got < 1 || got > DefaultBatchSize {
		t.Fatalf("ReadBatch into %d slots: got %d, %v; want 1..%d, nil", n, got, err, DefaultBatchSize)
	}
	for _, m := range in[got:] {
		if m.N != 0 || m.Addr.IsValid() {
			t.Fatalf("ReadBatch wrote slot beyond its count: %+v", m)
		}
	}
	rcvd := make([]Msg, 0, n)
	for _, m := range in[:got] {
		m.Buf = m.Buf[:m.N]
		rcvd = append(rcvd, m)
	}
	rcvd = append(rcvd, readAll(t, b, n-got, 1500)...)
	checkReceived(t, rcvd, out, a.LocalAddr())
}

func TestMixedSizes(t *testing.T) {
	for _, tc := range []struct {
		local netip.AddrPort
		max   int // largest UDP payload of the family on loopback (MTU 65536)
	}{
		{lo4, 65535 - 20 - 8},
		{lo6, 65535 - 8},
	} {
		t.Run(tc.local.Addr().String(), func(t *testing.T) {
			a := listen(t, Config{Local: tc.local})
			b := listen(t, Config{Local: tc.local})
			sizes := []int{0, 1, 4, 28, 1400, 1438, 1500, 8972, 9000, tc.max}
			out := make([]Msg, len(sizes))
			for i, s := range sizes {
				out[i] = Msg{Buf: payload(uint32(i), s), Addr: b.LocalAddr()}
			}
			if sent, err := a.WriteBatch(out); sent != len(out) || err != nil {
				t.Fatalf("WriteBatch: got %d, %v; want %d, nil", sent, err, len(out))
			}
			checkReceived(t, readAll(t, b, len(out), 65536), out, a.LocalAddr())
		})
	}
}

func TestTruncated(t *testing.T) {
	a := listen(t, Config{Local: lo4})
	b := listen(t, Config{Local: lo4})
	out := []Msg{
		{Buf: payload(1, 100), Addr: b.LocalAddr()},
		{Buf: payload(2, 1500), Addr: b.LocalAddr()},
		{Buf: payload(3, 64), Addr: b.LocalAddr()},
	}
	if sent, err := a.WriteBatch(out); sent != 3 || err != nil {
		t.Fatalf("WriteBatch: got %d, %v; want 3, nil", sent, err)
	}
	got := readAll(t, b, 3, 64)
	for i, want := range []struct {
		n     int
		trunc bool
	}{{64, true}, {64, true}, {64, false}} {
		if got[i].N != want.n || got[i].Truncated != want.trunc || !bytes.Equal(got[i].Buf, out[i].Buf[:want.n]) {
			t.Errorf("datagram %d: got N %d truncated %v, want N %d truncated %v and the first %d bytes",
				i, got[i].N, got[i].Truncated, want.n, want.trunc, want.n)
		}
	}
}

func TestSeveralDestinations(t *testing.T) {
	a := listen(t, Config{Local: lo4})
	dsts := []*Conn{listen(t, Config{Local: lo4}), listen(t, Config{Local: lo4}), listen(t, Config{Local: lo4})}
	var out []Msg
	want := make([][]Msg, len(dsts))
	for i := range 30 {
		d := i % len(dsts)
		m := Msg{Buf: payload(uint32(i), 100+i), Addr: dsts[d].LocalAddr()}
		out = append(out, m)
		want[d] = append(want[d], m)
	}
	if sent, err := a.WriteBatch(out); sent != len(out) || err != nil {
		t.Fatalf("WriteBatch: got %d, %v; want %d, nil", sent, err, len(out))
	}
	for d, c := range dsts {
		checkReceived(t, readAll(t, c, len(want[d]), 2048), want[d], a.LocalAddr())
	}
}

// TestDualStack: a socket on [::] talks to IPv4 and IPv6 peers, and IPv4
// peers appear as plain IPv4 addresses, not IPv4-mapped ones.
func TestDualStack(t *testing.T) {
	c := listen(t, Config{Local: netip.MustParseAddrPort("[::]:0")})
	port := c.LocalAddr().Port()
	for _, peerAddr := range []netip.AddrPort{lo4, lo6} {
		t.Run(peerAddr.Addr().String(), func(t *testing.T) {
			network := "udp4"
			if peerAddr.Addr().Is6() {
				network = "udp6"
			}
			peer, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(peerAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			peerAP = netip.AddrPortFrom(peerAP.Addr().Unmap(), peerAP.Port())
			to := netip.AddrPortFrom(peerAP.Addr(), port)
			if _, err := peer.WriteToUDPAddrPort([]byte("hello"), to); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, c, 1, 100)
			if got[0].Addr != peerAP || string(got[0].Buf) != "hello" {
				t.Fatalf("ReadBatch: got %q from %v, want %q from %v", got[0].Buf, got[0].Addr, "hello", peerAP)
			}
			// Reply to the source as received (plain IPv4 for the IPv4 peer).
			if sent, err := c.WriteBatch([]Msg{{Buf: []byte("world"), Addr: got[0].Addr}}); sent != 1 || err != nil {
				t.Fatalf("WriteBatch to %v: got %d, %v; want 1, nil", got[0].Addr, sent, err)
			}
			peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 100)
			n, from, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "world" || from.Port() != port {
				t.Fatalf("peer read: got %q from %v, %v; want %q from port %d", buf[:n], from, err, "world", port)
			}
		})
	}
}

// TestPartialFailure: messages that cannot go are skipped, the rest go, and
// the error of the first failure comes back.
func TestPartialFailure(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) {
		a := listen(t, Config{Local: lo4, BatchSize: 4})
		b := listen(t, Config{Local: lo4})
		dst := b.LocalAddr()
		tooBig := make([]byte, 65535-20-8+1) // EMSGSIZE from the kernel
		out := []Msg{
			{Buf: tooBig, Addr: dst}, // kernel refuses the first message of a sendmmsg
			{Buf: payload(1, 10), Addr: dst},
			{Buf: payload(2, 10), Addr: netip.MustParseAddrPort("[::1]:9")}, // wrong family
			{Buf: payload(3, 10), Addr: netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), dst.Port())},
			{Buf: payload(4, 10), Addr: dst},
			{Buf: tooBig, Addr: dst}, // kernel refuses one in the middle: sendmmsg stops short
			{Buf: payload(5, 10), Addr: dst},
			{Buf: payload(6, 10), Addr: netip.AddrPort{}}, // invalid
			{Buf: payload(7, 10), Addr: dst},
			{Buf: tooBig, Addr: dst}, // and the last
		}
		sent, err := a.WriteBatch(out)
		if sent != 5 || !errors.Is(err, unix.EMSGSIZE) {
			t.Fatalf("WriteBatch: got %d, %v; want 5, EMSGSIZE (the first failure)", sent, err)
		}
		var want []Msg
		for i, m := range out {
			ok := len(m.Buf) == 10 && m.Addr.Port() == dst.Port()
			wantN := -1
			if ok {
				wantN = 10
				want = append(want, m)
			}
			if m.N != wantN {
				t.Errorf("msg %d: N got %d, want %d", i, m.N, wantN)
			}
		}
		checkReceived(t, readAll(t, b, len(want), 100), want, a.LocalAddr())

		// Without kernel failures the first error is the address one.
		out = []Msg{{Buf: payload(8, 10), Addr: dst}, {Buf: payload(9, 10), Addr: netip.MustParseAddrPort("[::1]:9")}}
		if sent, err := a.WriteBatch(out); sent != 1 || !errors.Is(err, ErrAddrFamily) {
			t.Fatalf("WriteBatch to an IPv6 address: got %d, %v; want 1, ErrAddrFamily", sent, err)
		}
		checkReceived(t, readAll(t, b, 1, 100), out[:1], a.LocalAddr())
	})
	t.Run("ipv6only", func(t *testing.T) {
		a := listen(t, Config{Local: lo6})
		b := listen(t, Config{Local: lo6})
		out := []Msg{
			{Buf: payload(1, 10), Addr: netip.MustParseAddrPort("127.0.0.1:9")},
			{Buf: payload(2, 10), Addr: b.LocalAddr()},
			{Buf: payload(3, 10), Addr: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%nosuchif0"), 9)},
			{Buf: payload(4, 10), Addr: b.LocalAddr()},
		}
		sent, err := a.WriteBatch(out)
		if sent != 2 || !errors.Is(err, ErrAddrFamily) {
			t.Fatalf("WriteBatch: got %d, %v; want 2, ErrAddrFamily", sent, err)
		}
		if out[2].N != -1 {
			t.Errorf("unknown zone: N got %d, want -1", out[2].N)
		}
		if sent, err := a.WriteBatch(out[2:3]); sent != 0 || !errors.Is(err, ErrZone) {
			t.Fatalf("WriteBatch to an unknown zone: got %d, %v; want 0, ErrZone", sent, err)
		}
		checkReceived(t, readAll(t, b, 2, 100), []Msg{out[1], out[3]}, a.LocalAddr())
	})
}

func TestCloseUnblocksRead(t *testing.T) {
	c := listen(t, Config{Local: lo4})
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadBatch(recvBufs(4, 100))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReadBatch returned before Close, with nothing sent: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch after Close: got %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadBatch still blocked 10s after Close")
	}
	if _, err := c.ReadBatch(recvBufs(1, 100)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadBatch after Close: got %v, want net.ErrClosed", err)
	}
	msgs := []Msg{{Buf: []byte("x"), Addr: netip.MustParseAddrPort("127.0.0.1:9")}}
	if n, err := c.WriteBatch(msgs); n != 0 || !errors.Is(err, net.ErrClosed) || msgs[0].N != -1 {
		t.Errorf("WriteBatch after Close: got %d, %v, N %d; want 0, net.ErrClosed, N -1", n, err, msgs[0].N)
	}
}

// TestConcurrentReadWrite runs one reader and one writer goroutine on the
// same Conn (sending to itself), the supported concurrency, under -race.
func TestConcurrentReadWrite(t *testing.T) {
	c := listen(t, Config{Local: lo4, BatchSize: 32})
	const total = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	var werr error
	go func() {
		defer wg.Done()
		out := make([]Msg, 50)
		for i := 0; i < total; i += len(out) {
			for j := range out {
				out[j] = Msg{Buf: payload(uint32(i+j), 200), Addr: c.LocalAddr()}
			}
			if n, err := c.WriteBatch(out); n != len(out) || err != nil {
				werr = fmt.Errorf("WriteBatch at %d: got %d, %v", i, n, err)
				return
			}
		}
	}()
	got := readAll(t, c, total, 512)
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	seen := make([]bool, total)
	for _, m := range got {
		id := binary.BigEndian.Uint32(m.Buf)
		if int(id) >= total || seen[id] || !bytes.Equal(m.Buf, payload(id, 200)) {
			t.Fatalf("datagram id %d: duplicate, unknown or corrupt", id)
		}
		seen[id] = true
	}
}

func TestConcurrentMisusePanics(t *testing.T) {
	c := listen(t, Config{Local: lo4})
	c.rx.busy.Store(true) // as if another goroutine were inside ReadBatch
	defer func() {
		if recover() == nil {
			t.Error("second concurrent ReadBatch did not panic")
		}
		c.rx.busy.Store(false)
	}()
	c.ReadBatch(recvBufs(1, 10))
}

// TestNoAllocs: a steady-state 32-message WriteBatch + ReadBatch allocates
// nothing, in both families, with and without Head (a gather write).
func TestNoAllocs(t *testing.T) {
	for _, tc := range []struct {
		local netip.AddrPort
		head  int // bytes of each 1400-byte datagram sent from Head
	}{{lo4, 0}, {lo6, 0}, {lo4, 50}, {lo6, 50}} {
		t.Run(fmt.Sprintf("%v/head%d", tc.local.Addr(), tc.head), func(t *testing.T) {
			const n = 32
			a := listen(t, Config{Local: tc.local})
			b := listen(t, Config{Local: tc.local})
			out := make([]Msg, n)
			for i := range out {
				p := payload(uint32(i), 1400)
				out[i] = Msg{Buf: p[tc.head:], Addr: b.LocalAddr()}
				if tc.head > 0 {
					out[i].Head = p[:tc.head]
				}
			}
			in := recvBufs(n, 1500)
			var failed error
			round := func() {
				if sent, err := a.WriteBatch(out); sent != n || err != nil {
					failed = fmt.Errorf("WriteBatch: got %d, %v", sent, err)
					return
				}
				for got := 0; got < n; {
					k, err := b.ReadBatch(in[:n-got])
					if err != nil {
						failed = err
						return
					}
					got += k
				}
			}
			round() // warm up: nothing should be lazily allocated, but be fair
			if allocs := testing.AllocsPerRun(100, round); allocs != 0 {
				t.Errorf("WriteBatch+ReadBatch of %d: %v allocs/op, want 0", n, allocs)
			}
			if failed != nil {
				t.Fatal(failed)
			}
			if in[0].Addr != a.LocalAddr() {
				t.Errorf("source got %v, want %v", in[0].Addr, a.LocalAddr())
			}
		})
	}
}

func TestSockaddrPort(t *testing.T) {
	for _, p := range []uint16{0, 1, 255, 256, 4500, 4789, 65535} {
		var v uint16
		putPort(&v, p)
		b := (*[2]byte)(unsafe.Pointer(&v))
		if b[0] != byte(p>>8) || b[1] != byte(p) || getPort(&v) != p {
			t.Errorf("port %d: got bytes %x and back %d, want big-endian and %d", p, b[:], getPort(&v), p)
		}
	}
}

package gossip

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// heapAndStacks is the memory the Go runtime holds for live objects and
// goroutine stacks, after a GC.
func heapAndStacks() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// vmRSS is the process's resident set from /proc/self/status, or "?".
func vmRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// TestStreamFlood opens 2000 TCP connections to a member's gossip port from
// three addresses that are not members. Each sends what memberlist would
// buffer in full before it can authenticate anything (encryptMsg, a length
// at the limit, 16 KiB of garbage) and stays open. The member holds at
// most MaxStreamsPerIP of them per address, its memory stays bounded, and
// a new member still joins meanwhile.
func TestStreamFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2000 connections (skipped with -short)")
	}
	leakCheck(t)
	a := startNode(t, "a", testInfo("a", 1))
	g := a.streams
	const (
		conns   = 2000
		sources = 3 // × MaxStreamsPerIP (8) < MaxStreams (32): room for a member
		garbage = 16 << 10
	)
	msg := make([]byte, 5+garbage)
	msg[0] = encryptMsg
	binary.BigEndian.PutUint32(msg[1:], uint32(g.limits.maxBytes))
	for i := 5; i < len(msg); i++ {
		msg[i] = byte(i)
	}

	before := heapAndStacks()
	rssBefore := vmRSS()
	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	to := &net.TCPAddr{IP: net.IP(a.cfg.BindAddr.AsSlice()), Port: a.cfg.BindPort}
	for i := range conns {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%sources))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", to.String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
		_, _ = c.Write(msg) // fails once the guard has closed it: expected
	}
	// Every connection is either refused or held by memberlist.
	held := func() int { return len(g.slot) }
	if err := poll(10*time.Second, func() error {
		if r := g.refused.Load(); int(r)+held() < conns {
			return fmt.Errorf("refused %d + held %d < %d connections", r, held(), conns)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after := heapAndStacks()
	growth := int64(after) - int64(before)
	t.Logf("%d connections from %d addresses, each with a %d-byte encrypted-stream header and %d KiB sent: "+
		"held %d, refused %d; heap+stacks %.1f MiB -> %.1f MiB (growth %.1f MiB, including this test's own %d client sockets); VmRSS %s -> %s",
		conns, sources, g.limits.maxBytes, garbage>>10, held(), g.refused.Load(),
		float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20), conns, rssBefore, vmRSS())
	if h, want := held(), sources*g.limits.perIP; h > want {
		t.Errorf("streams held: got %d, want <= %d (MaxStreamsPerIP × addresses)", h, want)
	}
	// Unguarded, memberlist holds a goroutine, two 4 KiB readers and the
	// 16 KiB read so far for every one of the 2000: well over 64 MiB.
	if limit := int64(24 << 20); growth > limit {
		t.Errorf("memory growth with %d connections open: got %.1f MiB, want <= %.1f MiB", conns, float64(growth)/(1<<20), float64(limit)/(1<<20))
	}

	// The cluster still works: a new member joins while the flood is held.
	b := startNode(t, "b", testInfo("b", 2))
	if n, err := b.Join([]string{a.LocalAddr().String()}); n != 1 || err != nil {
		t.Fatalf("join during the flood: got %d, %v; want 1, nil", n, err)
	}
	if err := poll(10*time.Second, func() error { return expectState(a, "b", Alive, nil) }); err != nil {
		t.Fatal(err)
	}
}

// TestStreamScreen: what the guard lets through to memberlist and what it
// closes, stream by stream.
func TestStreamScreen(t *testing.T) {
	leakCheck(t)
	a := startNode(t, "a", testInfo("a", 1))
	g := a.streams
	to := a.LocalAddr().String()
	big := make([]byte, 5)
	big[0] = encryptMsg
	binary.BigEndian.PutUint32(big[1:], g.limits.maxBytes+1)
	cases := []struct {
		name    string
		send    []byte
		refused bool
	}{
		{"plaintext push/pull", []byte{6, 0, 0, 0, 0}, true},
		{"label header", []byte{244, 1, 'x', encryptMsg, 0}, true},
		{"longer than MaxStreamBytes", big, true},
		{"header never completed", []byte{encryptMsg, 0}, true}, // closed after the header timeout
		{"encrypted, garbage", []byte{encryptMsg, 0, 0, 0, 40, 1, 2, 3}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r0 := g.refused.Load()
			c, err := net.Dial("tcp", to)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			// Either way the stream ends: the guard or memberlist closes it.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var buf [64]byte
			for {
				if _, err := c.Read(buf[:]); err != nil {
					break
				}
			}
			if got := g.refused.Load() > r0; got != tc.refused {
				t.Errorf("refused by the guard: got %v, want %v", got, tc.refused)
			}
		})
	}
	if err := poll(5*time.Second, func() error {
		if n := len(g.slot); n != 0 {
			return fmt.Errorf("slots taken after every stream closed: got %d, want 0", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

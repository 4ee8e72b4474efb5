//go:build linux

package udp

import (
	"net"
	"testing"
	"time"
)

const (
	benchBatch = 64
	benchSize  = 1400
)

// BenchmarkLoopback moves 64 datagrams of 1400 bytes per op over IPv4
// loopback, from one socket to another, with this package (two system
// calls per op: without GSO, with GSO, and with GSO into a GRO receiver;
// the -head variants send each datagram as a 50-byte Head and a 1350-byte
// Buf, a gather write) and with a plain net.UDPConn loop (128 system calls
// per op). ns/datagram is the figure to compare; every batch variant
// allocates nothing.
func BenchmarkLoopback(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noGSO   bool
		gro     bool
		bufSize int
		head    int
	}{
		{"batch-nogso", true, false, 1500, 0},
		{"batch-gso", false, false, 1500, 0},
		{"batch-gso-gro", false, true, 65535, 0},
		{"batch-nogso-head", true, false, 1500, 50},
		{"batch-gso-head", false, false, 1500, 50},
	} {
		b.Run(tc.name, func(b *testing.B) {
			src := listen(b, Config{Local: lo4, NoGSO: tc.noGSO})
			dst := listen(b, Config{Local: lo4})
			if tc.gro {
				if err := dst.SetGRO(true); err != nil {
					b.Skip(err)
				}
			}
			out := make([]Msg, benchBatch)
			for i := range out {
				p := payload(uint32(i), benchSize)
				out[i] = Msg{Buf: p[tc.head:], Addr: dst.LocalAddr()}
				if tc.head > 0 {
					out[i].Head = p[:tc.head]
				}
			}
			in := recvBufs(benchBatch, tc.bufSize)
			b.SetBytes(benchBatch * benchSize)
			b.ReportAllocs()
			for b.Loop() {
				if n, err := src.WriteBatch(out); n != benchBatch || err != nil {
					b.Fatalf("WriteBatch: got %d, %v", n, err)
				}
				for got := 0; got < benchBatch; {
					n, err := dst.ReadBatch(in[:benchBatch-got])
					if err != nil {
						b.Fatalf("ReadBatch: %v", err)
					}
					for _, m := range in[:n] {
						got++
						if m.Segment > 0 {
							got += (m.N+m.Segment-1)/m.Segment - 1
						}
					}
				}
			}
			perDatagram(b)
		})
	}
	b.Run("plain", func(b *testing.B) {
		src, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo4))
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		dst, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo4))
		if err != nil {
			b.Fatal(err)
		}
		defer dst.Close()
		// Same buffers as the batch side, so neither drops; a deadline so a
		// lost datagram fails the benchmark instead of hanging it.
		for _, c := range []*net.UDPConn{src, dst} {
			if err := c.SetReadBuffer(DefaultSocketBuffer); err != nil {
				b.Fatal(err)
			}
			if err := c.SetWriteBuffer(DefaultSocketBuffer); err != nil {
				b.Fatal(err)
			}
		}
		if err := dst.SetReadDeadline(time.Now().Add(5 * time.Minute)); err != nil {
			b.Fatal(err)
		}
		to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
		msg := payload(1, benchSize)
		buf := make([]byte, 1500)
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		for b.Loop() {
			for range benchBatch {
				if _, err := src.WriteToUDPAddrPort(msg, to); err != nil {
					b.Fatalf("WriteToUDPAddrPort: %v", err)
				}
			}
			for range benchBatch {
				if _, _, err := dst.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatalf("ReadFromUDPAddrPort: %v", err)
				}
			}
		}
		perDatagram(b)
	})
}

func perDatagram(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/datagram")
	}
}

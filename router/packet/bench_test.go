package packet_test

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// TestNoAllocs: every decoder and builder on the packet path is
// allocation-free (builders given a buffer with enough capacity).
func TestNoAllocs(t *testing.T) {
	v4 := unhex(t, hexV4EchoRequest)
	v6 := unhex(t, hexV6EchoRequest)
	frame := unhex(t, hexARPRequestFrame)
	big4, big6 := bigV4(), bigV6()
	buf := make([]byte, 0, 2048)
	mac := packet.MAC{2, 0x42, 0x0a, 0x2a, 2, 1}
	var (
		ip   packet.IP
		eth  packet.Eth
		arp  packet.ARP
		addr netip.Addr
		sink uint32
	)
	tests := []struct {
		name string
		fn   func()
	}{
		{"IP.Parse v4", func() { _ = ip.Parse(v4) }},
		{"IP.Parse v6", func() { _ = ip.Parse(v6) }},
		{"IP.Parse error", func() { _ = ip.Parse(v4[:10]) }},
		{"DstAddr v4", func() { addr, _ = packet.DstAddr(v4) }},
		{"DstAddr v6", func() { addr, _ = packet.DstAddr(v6) }},
		{"SrcAddr v6", func() { addr, _ = packet.SrcAddr(v6) }},
		{"Eth.Parse", func() { _ = eth.Parse(frame) }},
		{"PutEth", func() { packet.PutEth(buf[:packet.EthHeaderLen], mac, mac, packet.EtherTypeARP) }},
		{"AppendEth", func() { buf = packet.AppendEth(buf[:0], mac, mac, packet.EtherTypeARP) }},
		{"ARP.Parse", func() { _ = arp.Parse(frame[packet.EthHeaderLen:]) }},
		{"AppendARPReply", func() { buf = packet.AppendARPReply(buf[:packet.EthHeaderLen], &arp, mac) }},
		{"ParseMAC", func() { mac, _ = packet.ParseMAC("02:42:0a:2a:02:01") }},
		{"Checksum", func() { sink += uint32(packet.Checksum(big4, 0)) }},
		{"PseudoHeaderSum v6", func() { sink += packet.PseudoHeaderSum(packet.ProtoICMPv6, v6A, v6B, 1232) }},
		{"AppendFragNeeded", func() { buf, _ = packet.AppendFragNeeded(buf, v4R, big4, 1438) }},
		{"AppendFragNeeded ErrNoReply", func() { buf, _ = packet.AppendFragNeeded(buf, v4R, v4[:20], 1438) }},
		{"AppendPacketTooBig", func() { buf, _ = packet.AppendPacketTooBig(buf, v6R, big6, 1438) }},
	}
	if err := arp.Parse(frame[packet.EthHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if a := testing.AllocsPerRun(100, tt.fn); a != 0 {
			t.Errorf("%s: got %v allocs/op, want 0", tt.name, a)
		}
	}
	_, _ = addr, sink
}

func BenchmarkIPParse(b *testing.B) {
	for _, c := range []struct{ name, hex string }{{"v4", hexV4EchoRequest}, {"v6", hexV6EchoRequest}} {
		pkt := unhex(b, c.hex)
		b.Run(c.name, func(b *testing.B) {
			var p packet.IP
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Parse(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDstAddr(b *testing.B) {
	for _, c := range []struct{ name, hex string }{{"v4", hexV4EchoRequest}, {"v6", hexV6EchoRequest}} {
		pkt := unhex(b, c.hex)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := packet.DstAddr(pkt); !ok {
					b.Fatal("DstAddr failed")
				}
			}
		})
	}
}

func BenchmarkSrcAddr(b *testing.B) {
	pkt := unhex(b, hexV6EchoRequest)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := packet.SrcAddr(pkt); !ok {
			b.Fatal("SrcAddr failed")
		}
	}
}

func BenchmarkEthParse(b *testing.B) {
	frame := unhex(b, hexEthIPv4Frame)
	var e packet.Eth
	b.SetBytes(packet.EthHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Parse(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkARPParse(b *testing.B) {
	payload := unhex(b, hexARPRequestFrame)[packet.EthHeaderLen:]
	var a packet.ARP
	b.SetBytes(packet.ARPLen)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Parse(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkARPReply: parse and answer in place (after the first round the
// frame holds a reply, which parses the same way).
func BenchmarkARPReply(b *testing.B) {
	frame := unhex(b, hexARPRequestFrame)
	mac := packet.MAC{2, 0x42, 0x0a, 0x2a, 2, 1}
	var a packet.ARP
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Parse(frame[packet.EthHeaderLen:]); err != nil {
			b.Fatal(err)
		}
		packet.PutEth(frame, a.SenderMAC, mac, packet.EtherTypeARP)
		frame = packet.AppendARPReply(frame[:packet.EthHeaderLen], &a, mac)
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 576, 1500, 65536} {
		data := seqBytes(n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var s uint16
			for b.Loop() {
				s += packet.Checksum(data, 0)
			}
			_ = s
		})
	}
}

// BenchmarkSum compares Sum (vector code where the CPU has it) with the
// scalar loop at the sizes the data path sums: a TCP segment and a 64 KiB
// GSO frame.
func BenchmarkSum(b *testing.B) {
	for _, n := range []int{128, 1448, 65536} {
		data := seqBytes(n)
		for _, impl := range []struct {
			name string
			sum  func([]byte, uint32) uint32
		}{{"Sum", packet.Sum}, {"scalar", packet.SumScalar}} {
			b.Run(impl.name+"/"+strconv.Itoa(n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				var s uint32
				for b.Loop() {
					s += impl.sum(data, 0)
				}
				_ = s
			})
		}
	}
}

func BenchmarkAppendFragNeeded(b *testing.B) {
	orig := bigV4()
	buf := make([]byte, 0, 2048)
	b.SetBytes(packet.MaxFragNeededLen)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = packet.AppendFragNeeded(buf, v4R, orig, 1438); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPacketTooBig(b *testing.B) {
	orig := bigV6()
	buf := make([]byte, 0, 2048)
	b.SetBytes(packet.MaxPacketTooBigLen)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = packet.AppendPacketTooBig(buf, v6R, orig, 1438); err != nil {
			b.Fatal(err)
		}
	}
}

package packet_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// The decoders read bytes from containers (TUN, bridge) and, after
// decryption, from peers: any byte string must be handled without a panic,
// and whatever is accepted must be self-consistent. Crashers found by
// `go test -fuzz` are committed under testdata/fuzz/<Target>/.

// FuzzIPParse: Parse never panics; an accepted header satisfies every
// invariant the forwarding path relies on, and agrees with the fast paths.
func FuzzIPParse(f *testing.F) {
	v6PayloadBeyond := buildIPv6(v6A, v6B, packet.ProtoICMPv6, nil)
	v6PayloadBeyond[5] = 64
	f.Add(unhex(f, hexV4EchoRequest))                                 // kernel IPv4 echo request, DF
	f.Add(unhex(f, hexV4EchoOdd))                                     // odd length
	f.Add(unhex(f, hexV6EchoRequest))                                 // kernel ICMPv6 echo request
	f.Add(unhex(f, hexEthIPv4Frame)[packet.EthHeaderLen:])            // from a VXLAN frame
	f.Add([]byte{})                                                   // empty
	f.Add([]byte{0x45})                                               // version byte only
	f.Add(unhex(f, hexV4EchoRequest)[:19])                            // IPv4 one byte short of a header
	f.Add(append([]byte{0x4f}, unhex(f, hexV4EchoRequest)[1:24]...))  // IHL 15: header (60) beyond the packet end
	f.Add(append([]byte{0x44}, unhex(f, hexV4EchoRequest)[1:]...))    // IHL 4 < 5
	f.Add(unhex(f, "4500000a"+"0000000040010000"+"0a0001020a000202")) // total length 10 < header
	f.Add(unhex(f, "45000100"+"0000000040010000"+"0a0001020a000202")) // total length 256 > buffer
	f.Add(unhex(f, hexV6EchoRequest)[:39])                            // IPv6 one byte short of a header
	f.Add(v6PayloadBeyond)                                            // payload length 64 beyond a bare header
	f.Add(buildIPv6(v6A, v6B, 59, nil))                               // bare IPv6 header, no next header
	f.Add(buildIPv4(v4A, v4B, 17, 0, make([]byte, 40), nil))          // all options, no payload
	f.Add([]byte{0x55, 0, 0, 0})                                      // version 5
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet.IP
		err := p.Parse(b)
		dst, dok := packet.DstAddr(b)
		src, sok := packet.SrcAddr(b)
		if dok != sok {
			t.Fatalf("DstAddr ok %v, SrcAddr ok %v: want equal", dok, sok)
		}
		if err != nil {
			if !errors.Is(err, packet.ErrShort) && !errors.Is(err, packet.ErrVersion) && !errors.Is(err, packet.ErrHeader) {
				t.Fatalf("Parse(%x): unexpected error %v", b, err)
			}
			return
		}
		if !dok || dst != p.Dst || src != p.Src {
			t.Fatalf("fast path (%v, %v, %v) disagrees with Parse %+v", src, dst, dok, p)
		}
		switch p.Version {
		case 4:
			if !p.Src.Is4() || !p.Dst.Is4() || p.HeaderLen < 20 || p.HeaderLen > 60 || p.HeaderLen%4 != 0 {
				t.Fatalf("bad IPv4 result %+v", p)
			}
		case 6:
			if !p.Src.Is6() || !p.Dst.Is6() || p.HeaderLen != 40 || !p.DF {
				t.Fatalf("bad IPv6 result %+v", p)
			}
		default:
			t.Fatalf("version %d accepted", p.Version)
		}
		if p.HeaderLen > p.TotalLen || p.TotalLen > len(b) {
			t.Fatalf("lengths: header %d, total %d, buffer %d", p.HeaderLen, p.TotalLen, len(b))
		}
		var p2 packet.IP // the datagram alone parses the same (fix-point)
		if err := p2.Parse(b[:p.TotalLen]); err != nil || p2 != p {
			t.Fatalf("re-parse of the first %d bytes: got %+v, %v; want %+v", p.TotalLen, p2, err, p)
		}
	})
}

// FuzzEthParse: parse → PutEth → the same 14 bytes → the same header.
func FuzzEthParse(f *testing.F) {
	f.Add(unhex(f, hexARPRequestFrame))                           // broadcast ARP request
	f.Add(unhex(f, hexEthIPv4Frame))                              // unicast IPv4
	f.Add([]byte{})                                               // empty
	f.Add(make([]byte, 13))                                       // one byte short
	f.Add(unhex(f, "ffffffffffff02420a2a01018100"+"0001"+"0800")) // 802.1Q tag: returned as type 0x8100
	f.Add(unhex(f, "0180c200000002420a2a01010026"))               // 802.3 length field (STP)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e, e2 packet.Eth
		if err := e.Parse(b); err != nil {
			if len(b) >= packet.EthHeaderLen || !errors.Is(err, packet.ErrShort) {
				t.Fatalf("Parse(%x): got %v", b, err)
			}
			return
		}
		out := packet.AppendEth(nil, e.Dst, e.Src, e.Type)
		if !bytes.Equal(out, b[:packet.EthHeaderLen]) {
			t.Fatalf("AppendEth: got %x, want %x", out, b[:packet.EthHeaderLen])
		}
		if err := e2.Parse(out); err != nil || e2 != e {
			t.Fatalf("re-parse: got %+v, %v; want %+v", e2, err, e)
		}
	})
}

// FuzzARPParse: parse → Append is the identity on the 28 bytes, and the
// reply built from any accepted request parses back with the fields swapped.
func FuzzARPParse(f *testing.F) {
	req := unhex(f, hexARPRequestFrame)[packet.EthHeaderLen:]
	f.Add(req)                                              // kernel request
	f.Add(unhex(f, hexARPReplyFrame)[packet.EthHeaderLen:]) // kernel reply
	f.Add(append(req[:28:28], make([]byte, 18)...))         // padded to a 60-byte frame
	f.Add([]byte{})                                         // empty
	f.Add(req[:27])                                         // one byte short
	f.Add(append([]byte{0, 6}, req[2:]...))                 // hardware type 6
	f.Add(append([]byte{0, 1, 0x86, 0xdd}, req[4:]...))     // protocol IPv6
	f.Add(append([]byte{0, 1, 8, 0, 6, 16}, req[6:]...))    // protocol length 16
	f.Fuzz(func(t *testing.T, b []byte) {
		var a, a2 packet.ARP
		if err := a.Parse(b); err != nil {
			if !errors.Is(err, packet.ErrShort) && !errors.Is(err, packet.ErrHeader) {
				t.Fatalf("Parse(%x): unexpected error %v", b, err)
			}
			return
		}
		out := a.Append(nil)
		if !bytes.Equal(out, b[:packet.ARPLen]) {
			t.Fatalf("Append: got %x, want %x", out, b[:packet.ARPLen])
		}
		if err := a2.Parse(out); err != nil || a2 != a {
			t.Fatalf("re-parse: got %+v, %v; want %+v", a2, err, a)
		}
		mac := packet.MAC{2, 0, 0, 0, 0, 1}
		var r packet.ARP
		if err := r.Parse(packet.AppendARPReply(nil, &a, mac)); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		want := packet.ARP{Op: packet.ARPReply, SenderMAC: mac, SenderIP: a.TargetIP, TargetMAC: a.SenderMAC, TargetIP: a.SenderIP}
		if r != want {
			t.Fatalf("reply: got %+v, want %+v", r, want)
		}
	})
}

// FuzzICMPBuild: for any packet, MTU and router address the builders never
// panic, fail only with the documented sentinels, and every message they
// build re-parses with valid checksums, the right MTU and the right quote.
// Building in place over the packet's own buffer gives the same bytes.
func FuzzICMPBuild(f *testing.F) {
	r4, r6 := v4R.AsSlice(), v6R.AsSlice()
	icmp4 := func(typ byte) []byte {
		return buildIPv4(v4A, v4B, packet.ProtoICMP, 0x4000, nil, append([]byte{typ, 0, 0, 0}, seqBytes(100)...))
	}
	f.Add(bigV4(), 1438, r4)                                                              // 1500-byte UDP, DF: quote capped at 548
	f.Add(bigV6(), 1438, r6)                                                              // 1500-byte IPv6 UDP: quote capped at 1232
	f.Add(unhex(f, hexV4EchoRequest), 68, r4)                                             // kernel echo, whole packet quoted, minimum MTU
	f.Add(unhex(f, hexV6EchoRequest), 1280, r6)                                           // kernel ICMPv6 echo, minimum MTU
	f.Add(icmp4(3), 1438, r4)                                                             // ICMP error: ErrNoReply
	f.Add(icmp4(8), 1438, r4)                                                             // ICMP echo: answerable
	f.Add(buildIPv4(v4A, v4B, 17, 0x0001, nil, seqBytes(100)), 1438, r4)                  // non-first fragment
	f.Add(buildIPv4(netip.MustParseAddr("224.0.0.5"), v4B, 17, 0, nil, nil), 1438, r4)    // multicast source
	f.Add(buildIPv6(v6A, v6B, 0, []byte{58, 0, 1, 4, 0, 0, 0, 0, 1, 0, 0, 0}), 1500, r6)  // hop-by-hop, ICMPv6 error
	f.Add(buildIPv6(v6A, v6B, 44, []byte{58, 0, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0}), 1500, r6) // non-first fragment
	f.Add(buildIPv6(v6A, v6B, 0, []byte{58, 255, 1, 4, 0, 0, 0, 0}), 1500, r6)            // extension header beyond the end
	f.Add(bigV4(), 67, r4)                                                                // MTU below the IPv4 minimum
	f.Add(bigV6(), 1279, r6)                                                              // MTU below the IPv6 minimum
	f.Add(bigV4(), 1438, r6)                                                              // family mismatch
	f.Add([]byte{}, 0, []byte{})                                                          // nothing at all
	f.Fuzz(func(t *testing.T, orig []byte, mtu int, fromBytes []byte) {
		from, _ := netip.AddrFromSlice(fromBytes) // zero Addr for bad lengths
		checkBuild(t, "AppendFragNeeded", packet.AppendFragNeeded, verifyFragNeeded, from, orig, mtu)
		checkBuild(t, "AppendPacketTooBig", packet.AppendPacketTooBig, verifyPacketTooBig, from, orig, mtu)
	})
}

type (
	icmpBuilder  func(dst []byte, from netip.Addr, orig []byte, mtu int) ([]byte, error)
	icmpVerifier func(out []byte, from netip.Addr, orig []byte, mtu int) error
)

// icmpBuildErrors are the only errors the ICMP builders may return.
var icmpBuildErrors = []error{packet.ErrShort, packet.ErrVersion, packet.ErrHeader, packet.ErrNoReply, packet.ErrFamily, packet.ErrMTU}

func checkBuild(t *testing.T, name string, build icmpBuilder, verify icmpVerifier, from netip.Addr, orig []byte, mtu int) {
	t.Helper()
	out, err := build(make([]byte, 0, 64), from, orig, mtu)
	if err != nil {
		for _, s := range icmpBuildErrors {
			if errors.Is(err, s) {
				if len(out) != 0 {
					t.Fatalf("%s: %d bytes with error %v", name, len(out), err)
				}
				return
			}
		}
		t.Fatalf("%s: unexpected error %v", name, err)
	}
	if verr := verify(out, from, orig, mtu); verr != nil {
		t.Fatalf("%s(%v, %x, %d): %v", name, from, orig, mtu, verr)
	}
	buf := make([]byte, len(orig), len(orig)+packet.MaxPacketTooBigLen)
	copy(buf, orig)
	in, err := build(buf, from, buf, mtu)
	if err != nil || !bytes.Equal(in, out) {
		t.Fatalf("%s in place: got %x, %v; want %x", name, in, err, out)
	}
}

package packet_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// TestARPGolden: parse the kernel's request, answer it as the kernel's vxlan0
// (02:42:0a:2a:02:01) would, and get the kernel's reply byte for byte.
func TestARPGolden(t *testing.T) {
	reqFrame := unhex(t, hexARPRequestFrame)
	replyFrame := unhex(t, hexARPReplyFrame)

	var req packet.ARP
	if err := req.Parse(reqFrame[packet.EthHeaderLen:]); err != nil {
		t.Fatalf("Parse request: %v", err)
	}
	wantReq := packet.ARP{
		Op:        packet.ARPRequest,
		SenderMAC: mustMAC(t, "02:42:0a:2a:01:01"),
		SenderIP:  netip.MustParseAddr("10.42.1.1"),
		TargetMAC: packet.MAC{},
		TargetIP:  netip.MustParseAddr("10.42.2.1"),
	}
	if req != wantReq {
		t.Fatalf("Parse request: got %+v, want %+v", req, wantReq)
	}
	if got := req.Append(nil); !bytes.Equal(got, reqFrame[packet.EthHeaderLen:]) {
		t.Fatalf("Append request: got %x, want %x", got, reqFrame[packet.EthHeaderLen:])
	}

	mac := mustMAC(t, "02:42:0a:2a:02:01")
	frame := packet.AppendEth(nil, req.SenderMAC, mac, packet.EtherTypeARP)
	frame = packet.AppendARPReply(frame, &req, mac)
	if !bytes.Equal(frame, replyFrame) {
		t.Fatalf("reply frame:\ngot  %x\nwant %x", frame, replyFrame)
	}

	var rep packet.ARP
	if err := rep.Parse(replyFrame[packet.EthHeaderLen:]); err != nil {
		t.Fatalf("Parse reply: %v", err)
	}
	wantRep := packet.ARP{Op: packet.ARPReply, SenderMAC: mac, SenderIP: req.TargetIP, TargetMAC: req.SenderMAC, TargetIP: req.SenderIP}
	if rep != wantRep {
		t.Fatalf("Parse reply: got %+v, want %+v", rep, wantRep)
	}
}

// TestARPReplyInPlace: the reply overwrites the request in its own buffer.
func TestARPReplyInPlace(t *testing.T) {
	buf := unhex(t, hexARPRequestFrame)
	var req packet.ARP
	if err := req.Parse(buf[packet.EthHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	mac := mustMAC(t, "02:42:0a:2a:02:01")
	packet.PutEth(buf, req.SenderMAC, mac, packet.EtherTypeARP)
	out := packet.AppendARPReply(buf[:packet.EthHeaderLen], &req, mac)
	if &out[0] != &buf[0] {
		t.Fatal("reply not built in the request's buffer")
	}
	if want := unhex(t, hexARPReplyFrame); !bytes.Equal(out, want) {
		t.Fatalf("got  %x\nwant %x", out, want)
	}
}

func TestARPParseErrors(t *testing.T) {
	req := unhex(t, hexARPRequestFrame)[packet.EthHeaderLen:]
	mod := func(i int, v byte) []byte {
		c := append([]byte(nil), req...)
		c[i] = v
		return c
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, packet.ErrShort},
		{"27 bytes", req[:27], packet.ErrShort},
		{"hardware type 6 (IEEE 802)", mod(1, 6), packet.ErrHeader},
		{"hardware type 0x0101", mod(0, 1), packet.ErrHeader},
		{"protocol type IPv6", append([]byte{0, 1, 0x86, 0xdd}, req[4:]...), packet.ErrHeader},
		{"hardware length 8", mod(4, 8), packet.ErrHeader},
		{"protocol length 16", mod(5, 16), packet.ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := packet.ARP{Op: 99}
			if err := a.Parse(tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%x): got %v, want %v", tt.b, err, tt.want)
			}
			if a.Op != 99 {
				t.Fatalf("Parse error modified a: got %+v", a)
			}
		})
	}
}

func TestARPParsePaddedAndOtherOps(t *testing.T) {
	// A 60-byte minimum Ethernet frame pads the ARP payload; padding is ignored.
	padded := append(unhex(t, hexARPRequestFrame)[packet.EthHeaderLen:], make([]byte, 18)...)
	var a packet.ARP
	if err := a.Parse(padded); err != nil || a.Op != packet.ARPRequest {
		t.Fatalf("padded request: got %+v, %v; want op 1, nil", a, err)
	}
	// Other opcodes (InARP 8, RFC 2390) are returned for the caller to ignore.
	padded[7] = 8
	if err := a.Parse(padded); err != nil || a.Op != 8 {
		t.Fatalf("op 8: got %+v, %v; want op 8, nil", a, err)
	}
}

func TestARPAppendNonIPv4(t *testing.T) {
	// A zero or IPv6 address never panics; it encodes as 0.0.0.0.
	a := packet.ARP{Op: packet.ARPRequest, SenderIP: netip.MustParseAddr("fd00::1")}
	b := a.Append(nil)
	var back packet.ARP
	if err := back.Parse(b); err != nil {
		t.Fatal(err)
	}
	zero := netip.AddrFrom4([4]byte{})
	if back.SenderIP != zero || back.TargetIP != zero {
		t.Fatalf("got sender %v target %v, want 0.0.0.0 both", back.SenderIP, back.TargetIP)
	}
	// IPv4-mapped addresses are written as IPv4.
	a.TargetIP = netip.AddrFrom16(netip.MustParseAddr("10.42.0.9").As16())
	if err := back.Parse(a.Append(nil)); err != nil || back.TargetIP != netip.MustParseAddr("10.42.0.9") {
		t.Fatalf("4in6 target: got %v, %v; want 10.42.0.9", back.TargetIP, err)
	}
}

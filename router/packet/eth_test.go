package packet_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

func TestParseMAC(t *testing.T) {
	tests := []struct {
		in   string
		want packet.MAC
		err  error
	}{
		{"02:42:0a:2a:01:01", packet.MAC{0x02, 0x42, 0x0a, 0x2a, 0x01, 0x01}, nil},
		{"02-42-0A-2A-01-01", packet.MAC{0x02, 0x42, 0x0a, 0x2a, 0x01, 0x01}, nil},
		{"ff:ff:ff:ff:ff:ff", packet.BroadcastMAC, nil},
		{"00:00:00:00:00:00", packet.MAC{}, nil},
		{"", packet.MAC{}, packet.ErrHeader},
		{"02:42:0a:2a:01", packet.MAC{}, packet.ErrHeader},          // five groups
		{"02:42:0a:2a:01:01:", packet.MAC{}, packet.ErrHeader},      // trailing separator
		{"02:42:0a:2a:01:0g", packet.MAC{}, packet.ErrHeader},       // not hex
		{"02:42-0a:2a:01:01", packet.MAC{}, packet.ErrHeader},       // mixed separators
		{"02.42.0a.2a.01.01", packet.MAC{}, packet.ErrHeader},       // wrong separator
		{"0242.0a2a.0101", packet.MAC{}, packet.ErrHeader},          // Cisco form
		{"2:42:a:2a:1:1", packet.MAC{}, packet.ErrHeader},           // one-digit groups
		{"02:42:0a:2a:01:01:02:03", packet.MAC{}, packet.ErrHeader}, // EUI-64
	}
	for _, tt := range tests {
		got, err := packet.ParseMAC(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("ParseMAC(%q): got %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestMACString(t *testing.T) {
	for _, s := range []string{"02:42:0a:2a:01:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "de:ad:be:ef:00:9a"} {
		m := mustMAC(t, s)
		if got := m.String(); got != s {
			t.Errorf("String: got %q, want %q", got, s)
		}
	}
}

func TestMACPredicates(t *testing.T) {
	tests := []struct {
		mac                  string
		bcast, mcast, isZero bool
	}{
		{"ff:ff:ff:ff:ff:ff", true, true, false},
		{"01:00:5e:00:00:01", false, true, false}, // IPv4 multicast
		{"33:33:00:00:00:01", false, true, false}, // IPv6 multicast
		{"02:42:0a:2a:01:01", false, false, false},
		{"00:00:00:00:00:00", false, false, true},
	}
	for _, tt := range tests {
		m := mustMAC(t, tt.mac)
		if m.IsBroadcast() != tt.bcast || m.IsMulticast() != tt.mcast || m.IsZero() != tt.isZero {
			t.Errorf("%s: got broadcast %v multicast %v zero %v; want %v %v %v", tt.mac,
				m.IsBroadcast(), m.IsMulticast(), m.IsZero(), tt.bcast, tt.mcast, tt.isZero)
		}
	}
}

func TestEthGolden(t *testing.T) {
	tests := []struct {
		name     string
		hex      string
		dst, src string
		typ      uint16
	}{
		{"ARP request (broadcast)", hexARPRequestFrame, "ff:ff:ff:ff:ff:ff", "02:42:0a:2a:01:01", packet.EtherTypeARP},
		{"ARP reply", hexARPReplyFrame, "02:42:0a:2a:01:01", "02:42:0a:2a:02:01", packet.EtherTypeARP},
		{"IPv4", hexEthIPv4Frame, "02:42:0a:2a:02:01", "02:42:0a:2a:01:01", packet.EtherTypeIPv4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.hex)
			var e packet.Eth
			if err := e.Parse(b); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := packet.Eth{Dst: mustMAC(t, tt.dst), Src: mustMAC(t, tt.src), Type: tt.typ}
			if e != want {
				t.Fatalf("Parse: got %+v, want %+v", e, want)
			}
			put := make([]byte, packet.EthHeaderLen)
			packet.PutEth(put, e.Dst, e.Src, e.Type)
			if !bytes.Equal(put, b[:packet.EthHeaderLen]) {
				t.Fatalf("PutEth: got %x, want %x", put, b[:packet.EthHeaderLen])
			}
			if got := packet.AppendEth([]byte{0xaa}, e.Dst, e.Src, e.Type); !bytes.Equal(got[1:], b[:packet.EthHeaderLen]) || got[0] != 0xaa {
				t.Fatalf("AppendEth: got %x, want aa%x", got, b[:packet.EthHeaderLen])
			}
		})
	}
}

func TestEthParseShort(t *testing.T) {
	b := unhex(t, hexARPRequestFrame)
	for _, n := range []int{0, 1, 13} {
		e := packet.Eth{Type: 7}
		if err := e.Parse(b[:n]); !errors.Is(err, packet.ErrShort) || e.Type != 7 {
			t.Errorf("Parse(%d bytes): got %v (type %d), want %v and e unchanged", n, err, e.Type, packet.ErrShort)
		}
	}
	var e packet.Eth
	if err := e.Parse(b[:14]); err != nil || e.Type != packet.EtherTypeARP {
		t.Errorf("Parse(header only): got %+v, %v; want type ARP, nil", e, err)
	}
}

func TestPutEthPanicsOnShort(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("PutEth into 13 bytes: no panic, want panic")
		}
	}()
	packet.PutEth(make([]byte, 13), packet.BroadcastMAC, packet.MAC{}, packet.EtherTypeARP)
}

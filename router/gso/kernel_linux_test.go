//go:build linux

package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/netnstest"
)

// Differential tests against Linux: a frame written with its virtio-net
// header into one TUN device is forwarded by the kernel to a second TUN
// device that has no offloads (no TUNSETOFFLOAD), so the kernel segments
// it and completes its checksums in software (validate_xmit_skb →
// skb_gso_segment, skb_checksum_help) and the reader of the second device
// gets what would go on a wire. Splitter must produce the same bytes, and
// the kernel must take a Coalescer frame and give back the packets it was
// made of. testenv is not used: it imports the router.

// kernelGSO is a namespace with the two TUN devices.
type kernelGSO struct {
	in  *os.File // drv-gso-in: IFF_VNET_HDR, frames written here
	out *os.File // drv-gso-out: plain, segments read here
}

var (
	kSrc4, kDst4 = netip.MustParseAddr("10.99.1.2"), netip.MustParseAddr("10.99.2.2")
	kSrc6, kDst6 = netip.MustParseAddr("fd99:1::2"), netip.MustParseAddr("fd99:2::2")
)

func newKernelGSO(t *testing.T) *kernelGSO {
	t.Helper()
	ns := netnstest.New(t, "gso")
	var k kernelGSO
	t.Cleanup(func() { // before the namespace goes (cleanups run last first)
		for _, f := range []*os.File{k.in, k.out} {
			if f != nil {
				f.Close()
			}
		}
	})
	// Sysctls under /proc/sys/net and TUN devices belong to the namespace
	// of the thread that opens them.
	err := ns.Do(func() error {
		for _, s := range []string{"ipv4/ip_forward", "ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/net/"+s, []byte("1"), 0); err != nil {
				return err
			}
		}
		for _, s := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+s+"/rp_filter", []byte("0"), 0); err != nil {
				return err
			}
		}
		var err error
		if k.in, err = openTUN("drv-gso-in", unix.IFF_VNET_HDR); err != nil {
			return err
		}
		k.out, err = openTUN("drv-gso-out", 0)
		return err
	})
	if err != nil {
		t.Fatalf("netns %s: %v", ns.Name, err)
	}
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	defer nl.Close()
	for _, l := range []struct {
		name   string
		v4, v6 string
	}{
		{"drv-gso-in", "10.99.1.1/24", "fd99:1::1/64"},
		{"drv-gso-out", "10.99.2.1/24", "fd99:2::1/64"},
	} {
		link, err := nl.LinkByName(l.name)
		if err != nil {
			t.Fatalf("%s: %v", l.name, err)
		}
		for _, a := range []string{l.v4, l.v6} {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				t.Fatal(err)
			}
			addr.Flags = unix.IFA_F_NODAD
			if err := nl.AddrAdd(link, addr); err != nil {
				t.Fatalf("%s: add %s: %v", l.name, a, err)
			}
		}
		if err := nl.LinkSetUp(link); err != nil {
			t.Fatalf("%s: up: %v", l.name, err)
		}
	}
	return &k
}

// openTUN opens a TUN device (IFF_TUN|IFF_NO_PI|flags) non-blocking, so
// that reads take deadlines.
func openTUN(name string, flags uint16) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | flags)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err == nil && flags&unix.IFF_VNET_HDR != 0 {
		if err = unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HdrLen); err == nil {
			err = unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// segments writes the frame h, super into the kernel and returns the
// first n packets of its flow (same addresses and ports) that leave the
// other device.
func (k *kernelGSO) segments(t *testing.T, h Hdr, super []byte, n int) [][]byte {
	t.Helper()
	frame := make([]byte, HdrLen, HdrLen+len(super))
	h.Encode(frame)
	if _, err := k.in.Write(append(frame, super...)); err != nil {
		t.Fatalf("write to TUN: %v", err)
	}
	var got [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(5 * time.Second)
	if err := k.out.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	for len(got) < n {
		m, err := k.out.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %d of %d segments before the deadline", len(got), n)
		}
		if err != nil {
			t.Fatalf("read from TUN: %v", err)
		}
		// Skip what else the kernel sends there (IPv6 MLD reports,
		// router solicitations) and what an earlier case left.
		if p := buf[:m]; sameFlow(p, super) {
			got = append(got, clone(p))
		}
	}
	return got
}

// sameFlow reports whether p has the version, addresses and ports of
// super.
func sameFlow(p, super []byte) bool {
	if len(p) < 20 || p[0]>>4 != super[0]>>4 || (p[0]>>4 == 6 && len(p) < 40) {
		return false
	}
	ipLen, addrs := ipHeaderLen(p), p[12:20]
	sAddrs := super[12:20]
	if p[0]>>4 == 6 {
		addrs, sAddrs = p[8:40], super[8:40]
	}
	sl := ipHeaderLen(super)
	return bytes.Equal(addrs, sAddrs) && len(p) >= ipLen+4 && bytes.Equal(p[ipLen:ipLen+4], super[sl:sl+4])
}

func TestSplitKernel(t *testing.T) {
	k := newKernelGSO(t)
	const flags = tcpACK | tcpFIN | tcpPSH | tcpCWR
	v4 := pktSpec{src: kSrc4, dst: kDst4, tcpOpts: tsOpts, flags: flags, seq: 0xffff_f000, ack: 3, id: 0xfffe}
	v6 := pktSpec{v6: true, src: kSrc6, dst: kDst6, tcpOpts: tsOpts, flags: flags, seq: 17, ack: 3, flowLabel: 0x12345}
	udp4 := pktSpec{udp: true, src: kSrc4, dst: kDst4, id: 77}
	udp6 := pktSpec{udp: true, v6: true, src: kSrc6, dst: kDst6}
	with := func(p pktSpec, n int, mods ...func(*pktSpec)) pktSpec {
		p.payload = payload(n, byte(n))
		for _, m := range mods {
			m(&p)
		}
		return p
	}
	cases := []struct {
		name string
		p    pktSpec
		mss  int
		ecn  bool
	}{
		{"tcpv4 exact", with(v4, 4*mss), mss, false},
		{"tcpv4 tail", with(v4, 4*mss+101), mss, false},
		{"tcpv4 mss+1", with(v4, mss+1), mss, false},
		{"tcpv4 small", with(v4, 500), mss, false},
		{"tcpv4 64 KiB", with(v4, 65535-52), mss, false},
		{"tcpv4 ecn", with(v4, 3*mss), mss, true},
		{"tcpv4 no DF", with(v4, 3*mss, func(p *pktSpec) { p.noDF = true }), mss, false},
		{"tcpv4 no options", with(v4, 3000, func(p *pktSpec) { p.tcpOpts = nil }), 1000, false},
		{"tcpv4 ip options", with(v4, 3000, func(p *pktSpec) { p.ipOpts = []byte{1, 1, 1, 0} }), 1000, false},
		{"tcpv6 exact", with(v6, 4*mss), mss, false},
		{"tcpv6 tail", with(v6, 4*mss+1), mss, false},
		{"tcpv6 small", with(v6, 1), mss, false},
		{"udpv4", with(udp4, 4*1000+3), 1000, false},
		{"udpv4 odd size", with(udp4, 3*999), 999, false},
		{"udpv6", with(udp6, 4*1000+3), 1000, false},
	}
	hbuf := make([]byte, MaxHeaders)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.sport, tc.p.dport = 40000+uint16(i), 443
			h, super := superPacket(tc.p, tc.mss)
			if tc.ecn {
				h.Type |= TypeECN
			}
			// Forwarding decrements the TTL (hop limit) before
			// segmentation; the IPv4 header checksum is recomputed per
			// segment anyway.
			ours := clone(super)
			if tc.p.v6 {
				ours[7]--
			} else {
				ours[8]--
			}
			var s Splitter
			if err := s.Init(h, ours); err != nil {
				t.Fatalf("Init: %v", err)
			}
			var want [][]byte
			for head, body, ok := s.Next(hbuf); ok; head, body, ok = s.Next(hbuf) {
				want = append(want, append(clone(head), body...))
			}
			got := k.segments(t, h, super, len(want))
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("segment %d of %d:\nkernel   %x\nSplitter %x", i, len(want), got[i][:min(len(got[i]), 80)], want[i][:min(len(want[i]), 80)])
				}
			}
		})
	}
}

// TestCompleteKernel compares the completion of a partial checksum in a
// frame without GSO with the kernel's (skb_checksum_help on the way out of
// a device without checksum offload).
func TestCompleteKernel(t *testing.T) {
	k := newKernelGSO(t)
	cases := []struct {
		name string
		full []byte
	}{
		{"tcpv4", pktSpec{src: kSrc4, dst: kDst4, tcpOpts: tsOpts, payload: payload(1000, 1)}.build()},
		{"tcpv6", pktSpec{v6: true, src: kSrc6, dst: kDst6, payload: payload(999, 2)}.build()},
		{"udpv4", pktSpec{udp: true, src: kSrc4, dst: kDst4, payload: payload(333, 3)}.build()},
		{"udpv4 zero checksum", zeroSum(pktSpec{udp: true, src: kSrc4, dst: kDst4, sport: 41000, dport: 53, payload: payload(100, 4)})},
		{"udpv6 zero checksum", zeroSum(pktSpec{v6: true, udp: true, src: kSrc6, dst: kDst6, sport: 41001, dport: 53, payload: payload(100, 5)})},
		{"tcpv4 zero checksum", zeroSum(pktSpec{src: kSrc4, dst: kDst4, sport: 41002, dport: 80, tcpOpts: tsOpts, payload: payload(100, 6)})},
		{"tcpv6 zero checksum", zeroSum(pktSpec{v6: true, src: kSrc6, dst: kDst6, sport: 41003, dport: 80, payload: payload(100, 7)})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ipLen, co := ipHeaderLen(c.full), csumOffset(c.full)
			h := Hdr{Flags: FlagNeedsCsum, CsumStart: uint16(ipLen), CsumOffset: uint16(co)}
			pkt := partial(clone(c.full))
			got := k.segments(t, h, pkt, 1)[0]
			var s Splitter
			if err := s.Init(h, pkt); err != nil {
				t.Fatalf("Init: %v", err)
			}
			// Forwarding changed the TTL and the IPv4 header checksum:
			// compare the transport part.
			if !bytes.Equal(got[ipLen:], pkt[ipLen:]) {
				t.Errorf("checksum: kernel %#04x, Splitter %#04x", got[ipLen+co:ipLen+co+2], pkt[ipLen+co:ipLen+co+2])
			}
		})
	}
}

// TestCoalesceKernel hands the kernel a Coalescer frame, as the router
// writes it to its TUN device, and checks that the kernel takes it and,
// segmenting it again on the way out, gives back the packets that were
// coalesced (with the TTL forwarding took off).
func TestCoalesceKernel(t *testing.T) {
	k := newKernelGSO(t)
	cases := []struct {
		name string
		p    pktSpec
		mss  int
	}{
		{"tcpv4", pktSpec{src: kSrc4, dst: kDst4, sport: 42000, tcpOpts: tsOpts, flags: tcpACK | tcpPSH, seq: 0xffff_f000, payload: payload(10*mss+7, 1)}, mss},
		{"tcpv4 64 KiB", pktSpec{src: kSrc4, dst: kDst4, sport: 42001, tcpOpts: tsOpts, payload: payload(65535-52, 2)}, mss},
		{"tcpv4 no DF", pktSpec{src: kSrc4, dst: kDst4, sport: 42002, noDF: true, id: 0xfff0, payload: payload(5*1460, 3)}, 1460},
		{"tcpv6", pktSpec{v6: true, src: kSrc6, dst: kDst6, sport: 42003, tcpOpts: tsOpts, flags: tcpACK | tcpPSH, payload: payload(10*mss+7, 4)}, mss},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, super := superPacket(tc.p, tc.mss)
			segs := splitContiguous(t, h, super)
			var c Coalescer
			addAll(&c, segs)
			if c.Len() != 1 || c.Segments(0) != len(segs) {
				t.Fatalf("got %d frames, the first of %d segments; want 1 of %d", c.Len(), c.Segments(0), len(segs))
			}
			fr := c.Frame(0)
			var fh Hdr
			if err := fh.Decode(fr[0]); err != nil {
				t.Fatal(err)
			}
			got := k.segments(t, fh, bytes.Join(fr[1:], nil), len(segs))
			for i, want := range segs {
				want = clone(want)
				ipLen := ipHeaderLen(want)
				if tc.p.v6 {
					want[7]--
				} else {
					want[8]--
					want[10], want[11] = 0, 0
					binary.BigEndian.PutUint16(want[10:], ^refSum(want[:ipLen]))
				}
				if !bytes.Equal(got[i], want) {
					t.Errorf("segment %d of %d:\nkernel %x\nwant   %x", i, len(segs), got[i][:min(len(got[i]), 80)], want[:min(len(want), 80)])
				}
			}
		})
	}
}

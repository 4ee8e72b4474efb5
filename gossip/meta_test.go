package gossip

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
)

func fill32(b byte) (a [32]byte) {
	for i := range a {
		a[i] = b
	}
	return a
}

// goldenInfo and goldenWire are one NodeInfo and its format-1 encoding,
// written out field by field from the layout in meta.go.
var goldenInfo = NodeInfo{
	Version:    "0.3.0",
	Underlay:   netip.MustParseAddrPort("192.0.2.1:4500"),
	Prefixes:   []netip.Prefix{netip.MustParsePrefix("10.42.7.0/24"), netip.MustParsePrefix("fd00:42::/64")},
	Block:      netip.MustParsePrefix("10.42.3.0/24"),
	BlockSince: 0x0102030405060708,
	Identity:   fill32(0x11),
	Ephemeral:  fill32(0x22),
	Epoch:      7,
	Encaps:     EncapESP | EncapVXLAN,
	Ciphers:    CipherAES128GCM | CipherChaCha20Poly1305,
	MAC:        [6]byte{0x02, 0, 0, 0, 0, 0x01},
}

var goldenWire = mustHex(
	"01" + "00" + "03" + "05" + // format, flags, encaps, ciphers
		"00000007" + // epoch
		"0102030405060708" + // block since
		strings.Repeat("11", 32) + strings.Repeat("22", 32) + // identity, ephemeral
		"020000000001" + // MAC
		"04" + "c0000201" + "1194" + // underlay 192.0.2.1:4500
		"18" + "0a2a03" + // block 10.42.3.0/24
		"05" + "302e332e30" + // version "0.3.0"
		"02" + "18" + "0a2a07" + // 2 prefixes: 10.42.7.0/24
		"80" + "fd00004200000000", // fd00:42::/64 (tag 64+64)
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestMetaGolden(t *testing.T) {
	got, err := goldenInfo.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goldenWire) {
		t.Fatalf("Marshal:\n got %x\nwant %x", got, goldenWire)
	}
	var n NodeInfo
	if err := n.UnmarshalBinary(goldenWire); err != nil {
		t.Fatal(err)
	}
	if !n.Equal(&goldenInfo) {
		t.Fatalf("Unmarshal: got %+v, want %+v", n, goldenInfo)
	}
	leaving := bytes.Clone(goldenWire)
	leaving[1] = flagLeaving
	if f, err := n.decodeMeta(leaving); err != nil || f != flagLeaving {
		t.Fatalf("decodeMeta with the leaving flag: got %#x, %v; want %#x, nil", f, err, flagLeaving)
	}
}

// goldenChunks is goldenWire with two chunk claims: flag bit 1, then the
// count and 18 bytes per claim (pool, index, since; big-endian).
var goldenChunks = func() []byte {
	b := bytes.Clone(goldenWire)
	b[1] = flagChunks
	tail, _ := hex.DecodeString("02" +
		"0123456789abcdef" + "0003" + "0000000000000007" +
		"fedcba9876543210" + "ffff" + "1800000000000000")
	return append(b, tail...)
}()

func TestMetaGoldenChunks(t *testing.T) {
	in := goldenInfo
	in.Chunks = []ChunkClaim{{Pool: 0x0123456789abcdef, Index: 3, Since: 7}, {Pool: 0xfedcba9876543210, Index: 0xffff, Since: 0x18 << 56}}
	got, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goldenChunks) {
		t.Fatalf("Marshal:\n got %x\nwant %x", got, goldenChunks)
	}
	var n NodeInfo
	if err := n.UnmarshalBinary(goldenChunks); err != nil || !n.Equal(&in) {
		t.Fatalf("Unmarshal: got %+v, %v; want %+v", n, err, in)
	}
	// A node without chunk claims publishes what builds before chunks
	// read: no flag, nothing after the prefixes.
	if b, _ := goldenInfo.MarshalBinary(); b[1] != 0 || !bytes.Equal(b, goldenWire) {
		t.Fatalf("without chunks: %x, want the format-1 golden bytes", b)
	}
	leaving := bytes.Clone(goldenChunks)
	leaving[1] |= flagLeaving
	if f, err := n.decodeMeta(leaving); err != nil || f != flagLeaving|flagChunks {
		t.Fatalf("leaving with chunks: %#x, %v", f, err)
	}
	in.Chunks = make([]ChunkClaim, MaxChunkClaims+1)
	if _, err := in.MarshalBinary(); err == nil || !strings.Contains(err.Error(), "chunk claims") {
		t.Fatalf("%d chunk claims: %v, want an error", MaxChunkClaims+1, err)
	}
}

// goldenDirect is goldenChunks with the direct flag (bit 2) and the
// underlay MAC after the claims.
var goldenDirect = func() []byte {
	b := bytes.Clone(goldenChunks)
	b[1] |= flagDirect
	return append(b, 0x02, 0xdd, 0, 0, 0, 0x07)
}()

func TestMetaGoldenDirect(t *testing.T) {
	in := goldenInfo
	in.Chunks = []ChunkClaim{{Pool: 0x0123456789abcdef, Index: 3, Since: 7}, {Pool: 0xfedcba9876543210, Index: 0xffff, Since: 0x18 << 56}}
	in.Direct, in.DirectMAC = true, [6]byte{0x02, 0xdd, 0, 0, 0, 0x07}
	got, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goldenDirect) {
		t.Fatalf("Marshal:\n got %x\nwant %x", got, goldenDirect)
	}
	var n NodeInfo
	if err := n.UnmarshalBinary(goldenDirect); err != nil || !n.Equal(&in) {
		t.Fatalf("Unmarshal: got %+v, %v; want %+v", n, err, in)
	}
	// Without chunks the MAC follows the prefixes.
	in.Chunks = nil
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(goldenWire), in.DirectMAC[:]...); b[1] != flagDirect || !bytes.Equal(b[2:], want[2:]) {
		t.Fatalf("direct without chunks: got %x, want flags %#x and %x", b, flagDirect, want[2:])
	}
	if err := n.UnmarshalBinary(b); err != nil || !n.Equal(&in) {
		t.Fatalf("Unmarshal direct without chunks: got %+v, %v; want %+v", n, err, in)
	}
	if err := n.UnmarshalBinary(b[:len(b)-1]); err == nil || !strings.Contains(err.Error(), "direct MAC truncated") {
		t.Fatalf("truncated MAC: got %v, want \"direct MAC truncated\"", err)
	}
}

// maxOthers is a NodeInfo whose fields other than Prefixes take the most
// room: IPv6 underlay, IPv6 /128 block, 32-byte version.
func maxOthers(prefixes []netip.Prefix) NodeInfo {
	n := goldenInfo
	n.Version = strings.Repeat("v", MaxVersionLen)
	n.Underlay = netip.MustParseAddrPort("[2001:db8::1]:4500")
	n.Block = netip.MustParsePrefix("2001:db8::42/128")
	n.Prefixes = prefixes
	return n
}

func marshal(n NodeInfo) []byte {
	b, err := n.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

func nPrefixes(n int, f func(i int) netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, n)
	for i := range ps {
		ps[i] = f(i)
	}
	return ps
}

func v4s24(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
}

func v4s32(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
}

func v6s64(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}), 64)
}

func TestMetaRoundTrip(t *testing.T) {
	v6 := goldenInfo
	v6.Underlay = netip.MustParseAddrPort("[2001:db8::7]:4789")
	v6.Block = netip.MustParsePrefix("fd42:0:0:3::/64")
	v6.Prefixes = []netip.Prefix{netip.MustParsePrefix("2001:db8:ff::/48"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd00::1/128")}
	mapped := goldenInfo
	mapped.Underlay = netip.MustParseAddrPort("[::ffff:192.0.2.9]:4500") // stays 4in6, not 192.0.2.9
	mapped.Prefixes = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("10.128.0.0/9")}
	noBlock := goldenInfo
	noBlock.Block, noBlock.BlockSince, noBlock.Prefixes, noBlock.Version = netip.Prefix{}, 0, nil, ""
	unknownBits := goldenInfo
	unknownBits.Encaps, unknownBits.Ciphers = 0xff, 0xff // capabilities of newer builds are carried

	tests := []struct {
		name string
		in   NodeInfo
		size int
	}{
		{"zero", NodeInfo{}, minLen},
		{"golden", goldenInfo, len(goldenWire)},
		{"ipv6", v6, 0},
		{"4in6 and odd lengths", mapped, 0},
		{"no block, no prefixes", noBlock, 0},
		{"unknown capability bits", unknownBits, 0},
		{"max /24 prefixes", maxOthers(nPrefixes(89, v4s24)), 512},
		{"max /32 prefixes", maxOthers(nPrefixes(71, v4s32)), 511},
		{"max /64 prefixes", maxOthers(nPrefixes(39, v6s64)), 507},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.in.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if tc.size != 0 && len(b) != tc.size {
				t.Errorf("size: got %d, want %d", len(b), tc.size)
			}
			var out NodeInfo
			if err := out.UnmarshalBinary(b); err != nil {
				t.Fatalf("Unmarshal(%x): %v", b, err)
			}
			if !out.Equal(&tc.in) {
				t.Fatalf("got %+v, want %+v", out, tc.in)
			}
			if tc.in.Underlay.IsValid() && out.Underlay.Addr().Is4In6() != tc.in.Underlay.Addr().Is4In6() {
				t.Fatalf("underlay: got %v, want %v", out.Underlay, tc.in.Underlay)
			}
		})
	}
}

func TestMetaMarshalErrors(t *testing.T) {
	withV := func(f func(*NodeInfo)) NodeInfo { n := goldenInfo; f(&n); return n }
	tests := []struct {
		name string
		in   NodeInfo
		want string
	}{
		{"one /24 too many", maxOthers(nPrefixes(90, v4s24)), "needs 516 bytes, memberlist node meta holds 512: only 89 of the 90 prefixes fit"},
		{"one /64 too many", maxOthers(nPrefixes(40, v6s64)), "only 39 of the 40 prefixes fit"},
		{"more than 255", withV(func(n *NodeInfo) {
			n.Prefixes = nPrefixes(256, func(int) netip.Prefix { return netip.MustParsePrefix("0.0.0.0/0") })
		}), "256 prefixes, at most 255"},
		{"long version", withV(func(n *NodeInfo) { n.Version = strings.Repeat("x", 33) }), "is 33 bytes, at most 32"},
		{"version not UTF-8", withV(func(n *NodeInfo) { n.Version = "\xff" }), "not UTF-8"},
		{"host bits", withV(func(n *NodeInfo) { n.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")} }), "host bits set (want 10.0.0.0/24)"},
		{"block host bits", withV(func(n *NodeInfo) { n.Block = netip.MustParsePrefix("10.42.3.1/24") }), "block: prefix 10.42.3.1/24 has host bits"},
		{"invalid prefix", withV(func(n *NodeInfo) { n.Prefixes = []netip.Prefix{{}} }), "invalid prefix"},
		{"zone", withV(func(n *NodeInfo) { n.Underlay = netip.MustParseAddrPort("[fe80::1%eth0]:4500") }), "has a zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.in.MarshalBinary()
			if err == nil {
				t.Fatalf("got %d bytes, nil; want error containing %q", len(b), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// variant returns goldenWire with the bytes from off replaced by repl (and
// the rest cut off when cut is set).
func variant(off int, repl string, cut bool) []byte {
	b := bytes.Clone(goldenWire)
	r := mustHex(repl)
	if cut {
		return append(b[:off], r...)
	}
	copy(b[off:], r)
	return b
}

// Offsets in goldenWire.
const (
	offUnderlay = fixedLen
	offBlock    = offUnderlay + 7
	offVersion  = offBlock + 4
	offCount    = offVersion + 6
	offPrefix0  = offCount + 1
)

func TestMetaUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"format 0", variant(0, "00", false), "format 0"},
		{"format 2", variant(0, "02", false), "format 2, this build reads only 1"},
		{"short", goldenWire[:minLen-1], "truncated"},
		{"unknown flag", variant(1, "08", false), "unknown flags"},
		{"direct flag, no MAC", variant(1, "04", false), "direct MAC truncated"},
		{"chunk flag, no count", variant(1, "02", false), "chunk count truncated"},
		{"chunk count 0", append(variant(1, "02", false), 0), "0 chunk claims"},
		{"chunk count 9", append(variant(1, "02", false), 9), "9 chunk claims"},
		{"chunk claim truncated", append(variant(1, "02", false), 1, 0, 0, 0), "1 chunk claims in 3 bytes"},
		{"bytes after the chunks", append(bytes.Clone(goldenChunks), 0), "1 bytes after the last field"},
		{"underlay tag", variant(offUnderlay, "05", false), "underlay tag 5"},
		{"underlay v6 truncated", variant(offUnderlay, "06", false)[:offUnderlay+10], "underlay truncated"},
		{"block tag 33", variant(offBlock, "21", false), "block: bad tag"},
		{"block tag 193", variant(offBlock, "c1", false), "block: bad tag"},
		{"block host bits", variant(offBlock, "170a2a03", false), "block: host bits set"}, // /23 with bit 23 set
		{"version too long", variant(offVersion, "21", false), "version length 33"},
		{"version truncated", variant(offVersion, "3f", true), "version length 63"},
		{"version past end", variant(offVersion, "05302e", true), "version truncated"},
		{"version not UTF-8", variant(offVersion+1, "ff", false), "not UTF-8"},
		{"no prefix count", goldenWire[:offCount], "prefix count truncated"},
		{"count beyond end", variant(offCount, "ff", false), "255 prefixes in 13 bytes"},
		{"prefix truncated", goldenWire[:len(goldenWire)-1], "prefixes[1]: truncated"},
		{"prefix host bits", variant(offPrefix0, "170a2a07", false), "prefixes[0]: host bits set"},
		{"trailing byte", append(bytes.Clone(goldenWire), 0), "1 bytes after the last field"},
		{"more than 512", append(bytes.Clone(goldenWire), make([]byte, 512)...), "more than 512"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := goldenInfo
			n.Version = "unchanged"
			err := n.UnmarshalBinary(tc.in)
			if !errors.Is(err, ErrInfo) {
				t.Fatalf("got %v, want an ErrInfo", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want it to contain %q", err, tc.want)
			}
			if n.Version != "unchanged" {
				t.Fatalf("a failed Unmarshal changed the NodeInfo: %+v", n)
			}
		})
	}
	// Every truncation of a valid encoding is an error.
	for l := range len(goldenWire) {
		var n NodeInfo
		if err := n.UnmarshalBinary(goldenWire[:l]); err == nil {
			t.Fatalf("%d of %d bytes: got %+v, nil; want an error", l, len(goldenWire), n)
		}
	}
}

func TestCipherBit(t *testing.T) {
	for _, tc := range []struct {
		c    esp.Cipher
		want uint8
	}{{esp.AES128GCM, 1}, {esp.AES256GCM, 2}, {esp.ChaCha20Poly1305, 4}, {0, 0}, {9, 0}} {
		if got := CipherBit(tc.c); got != tc.want {
			t.Errorf("CipherBit(%v): got %d, want %d", tc.c, got, tc.want)
		}
	}
}

// TestUnmarshalAllocs bounds what decoding costs: the version string and the
// prefix slice, nothing per prefix.
func TestUnmarshalAllocs(t *testing.T) {
	big := marshal(maxOthers(nPrefixes(89, v4s24)))
	for _, b := range [][]byte{goldenWire, big} {
		var n NodeInfo
		if a := testing.AllocsPerRun(100, func() { _ = n.UnmarshalBinary(b) }); a > 2 {
			t.Errorf("%d bytes: %v allocs/op, want <= 2", len(b), a)
		}
	}
	// Chunk claims add their slice, one allocation for all of them.
	var n NodeInfo
	if a := testing.AllocsPerRun(100, func() { _ = n.UnmarshalBinary(goldenChunks) }); a > 3 {
		t.Errorf("with chunk claims: %v allocs/op, want <= 3", a)
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	var n NodeInfo
	b.SetBytes(int64(len(goldenWire)))
	b.ReportAllocs()
	for b.Loop() {
		if err := n.UnmarshalBinary(goldenWire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	b.SetBytes(int64(len(goldenWire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := goldenInfo.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzUnmarshal: the meta of every member reaches this decoder (from members
// holding the cluster key, so the threat is a buggy or newer build rather
// than an outsider). It must never panic, and what it accepts must be the
// canonical encoding: re-encoding gives the same bytes, and decoding those
// gives the same NodeInfo (a fix-point).
func FuzzUnmarshal(f *testing.F) {
	f.Add(goldenWire)
	f.Add([]byte{})
	f.Add([]byte{formatV1})
	f.Add(goldenWire[:minLen-1]) // one byte short of the smallest encoding
	if b, err := (&NodeInfo{}).MarshalBinary(); err == nil {
		f.Add(b) // the smallest encoding
	}
	f.Add(marshal(maxOthers(nPrefixes(89, v4s24)))) // 512 bytes
	f.Add(marshal(maxOthers(nPrefixes(39, v6s64))))
	f.Add(variant(1, "01", false))           // leaving flag
	f.Add(goldenChunks)                      // chunk claims
	f.Add(goldenDirect)                      // chunk claims and direct
	f.Add(variant(offCount, "ff", false))    // prefix count beyond the end
	f.Add(variant(offBlock, "ff", false))    // no block: the rest shifts
	f.Add(variant(offUnderlay, "06", false)) // v6 underlay tag over v4 bytes
	f.Fuzz(func(t *testing.T, b []byte) {
		var n, n2 NodeInfo
		flags, err := n.decodeMeta(b)
		if err != nil {
			return
		}
		re, err := n.appendMeta(nil, flags)
		if err != nil {
			t.Fatalf("re-encode of %x (%+v): %v", b, n, err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("not canonical:\n  in %x\n  re %x", b, re)
		}
		if err := n2.UnmarshalBinary(re); err != nil || !n2.Equal(&n) {
			t.Fatalf("re-decode of %x: got %+v, %v; want %+v", re, n2, err, n)
		}
	})
}

func ExampleNodeInfo_MarshalBinary() {
	n := NodeInfo{
		Version:  "0.3.0",
		Underlay: netip.MustParseAddrPort("192.0.2.1:4500"),
		Block:    netip.MustParsePrefix("10.42.3.0/24"),
		Encaps:   EncapESP,
		Ciphers:  CipherBit(esp.AES256GCM),
	}
	b, err := n.MarshalBinary()
	fmt.Println(len(b), err)
	// Output: 104 <nil>
}

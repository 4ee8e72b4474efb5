package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func rememberedVector(t testing.TB) ([]remembered, []byte) {
	t.Helper()
	info := testInfo("c", 3)
	meta, err := info.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	rs := []remembered{
		{name: "c", deadFor: 90 * time.Second, addr: netip.MustParseAddrPort("192.0.2.3:7946"), meta: meta},
		{name: "v6", deadFor: 0, addr: netip.MustParseAddrPort("[2001:db8::6]:7000"), meta: meta},
	}
	var want []byte
	want = append(want, 1, 0, 2)
	want = append(want, 1, 'c', 0, 0, 0, 90, 4, 192, 0, 2, 3, 0x1f, 0x0a, byte(len(meta)>>8), byte(len(meta)))
	want = append(want, meta...)
	want = append(want, 2, 'v', '6', 0, 0, 0, 0, 6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0x1b, 0x58, byte(len(meta)>>8), byte(len(meta)))
	want = append(want, meta...)
	return rs, want
}

func TestRememberedEncoding(t *testing.T) {
	rs, want := rememberedVector(t)
	got := appendRemembered(nil, rs)
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding:\ngot  %x\nwant %x", got, want)
	}
	back, err := decodeRemembered(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(rs) {
		t.Fatalf("decoded %d entries, want %d", len(back), len(rs))
	}
	for i := range rs {
		if back[i].name != rs[i].name || back[i].deadFor != rs[i].deadFor || back[i].addr != rs[i].addr || !bytes.Equal(back[i].meta, rs[i].meta) {
			t.Fatalf("entry %d: got %+v, want %+v", i, back[i], rs[i])
		}
	}
}

func TestRememberedDecodeErrors(t *testing.T) {
	_, good := rememberedVector(t)
	tooMany := []byte{1, (maxRemembered + 1) >> 8, (maxRemembered + 1) & 0xff}
	badTag := bytes.Clone(good)
	badTag[3+1+1+4] = 5
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", []byte{1, 0}},
		{"version", append([]byte{2}, good[1:]...)},
		{"too many", tooMany},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(bytes.Clone(good), 0)},
		{"empty name", []byte{1, 0, 1, 0}},
		{"address tag", badTag},
		{"count beyond data", []byte{1, 0, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeRemembered(tc.b); !errors.Is(err, errRemembered) {
				t.Fatalf("decode %x: got %v, want an error wrapping errRemembered", tc.b, err)
			}
		})
	}
}

func FuzzRemembered(f *testing.F) {
	_, good := rememberedVector(f)
	f.Add(good)
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := decodeRemembered(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if got := appendRemembered(nil, rs); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}

// Decoding is per push/pull (every PushPullInterval, and per join), not
// per packet: it allocates its entries and names, and is measured, not
// held to zero allocations.
func BenchmarkRememberedDecode(b *testing.B) {
	rs, _ := rememberedVector(b)
	var many []remembered
	for i := range 100 {
		r := rs[0]
		r.name = fmt.Sprintf("host-%03d", i)
		many = append(many, r)
	}
	buf := appendRemembered(nil, many)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeRemembered(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// A member that joins after memberlist has forgotten a dead one still learns
// it, dead, with its last info, from its first push/pull (the join): block
// holders across a partition stay known to hosts that join on either side.
func TestNewMemberLearnsTheDead(t *testing.T) {
	leakCheck(t)
	fastDead := func(c *Config) { c.GossipToTheDeadTime = 500 * time.Millisecond }
	a := startNode(t, "a", testInfo("a", 1), fastDead)
	cInfo := testInfo("c", 3)
	c := startNode(t, "c", cInfo, fastDead)
	if _, err := c.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() error { return expectState(a, "c", Alive, nil) }); err != nil {
		t.Fatal(err)
	}
	_ = c.Shutdown() // fails, without a leave
	if err := poll(15*time.Second, func() error {
		if err := expectState(a, "c", Dead, nil); err != nil {
			return err
		}
		if n := a.ml.NumMembers(); n != 1 {
			return fmt.Errorf("memberlist of a still has %d members", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // c dead for at least a second, so the age shows
	d := startNode(t, "d", testInfo("d", 4))
	if _, err := d.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() error { return expectState(d, "c", Dead, &cInfo) }); err != nil {
		t.Fatal(err)
	}
	m, _ := member(d, "c")
	ma, _ := member(a, "c")
	if diff := m.Since.Sub(ma.Since); diff < -1500*time.Millisecond || diff > 1500*time.Millisecond {
		t.Fatalf("d has c dead since %v, a since %v: want about the same time", m.Since, ma.Since)
	}
}

// Names of 255 bytes round-trip (the decoder once computed 1+255 in byte
// arithmetic and panicked: FuzzRemembered's seed 5af55000c299f250); names
// and metas the format cannot carry are left out, not mangled.
func TestRememberedLimits(t *testing.T) {
	meta := []byte{1}
	long := strings.Repeat("n", 255)
	rs := []remembered{
		{name: long, addr: netip.MustParseAddrPort("192.0.2.1:7946"), meta: meta},
		{name: long + "x", addr: netip.MustParseAddrPort("192.0.2.2:7946"), meta: meta},
		{name: "", addr: netip.MustParseAddrPort("192.0.2.3:7946"), meta: meta},
		{name: "nometa", addr: netip.MustParseAddrPort("192.0.2.4:7946")},
		{name: "ok", addr: netip.MustParseAddrPort("192.0.2.5:7946"), meta: meta},
	}
	back, err := decodeRemembered(appendRemembered(nil, rs))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range back {
		names = append(names, r.name)
	}
	if len(back) != 2 || back[0].name != long || back[1].name != "ok" {
		t.Fatalf("decoded names %q, want the 255-byte one and ok", names)
	}
}

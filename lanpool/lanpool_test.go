package lanpool

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var lan = Pool{Network: "lan", Start: netip.MustParseAddr("192.168.50.100"), End: netip.MustParseAddr("192.168.50.149"), Size: 16}

func TestChunks(t *testing.T) {
	if got := lan.Len(); got != 4 {
		t.Fatalf("Len: got %d, want 4 (50 addresses in chunks of 16)", got)
	}
	for i, want := range []string{"192.168.50.100-192.168.50.115", "192.168.50.116-192.168.50.131", "192.168.50.132-192.168.50.147", "192.168.50.148-192.168.50.149"} {
		f, l := lan.Chunk(i)
		if got := f.String() + "-" + l.String(); got != want {
			t.Errorf("chunk %d: got %s, want %s", i, got, want)
		}
	}
	for _, tc := range []struct {
		p    Pool
		want string
	}{
		{Pool{Start: lan.Start, End: lan.End, Size: 16}, "empty network"},
		{Pool{Network: "n", Start: netip.MustParseAddr("fd00::1"), End: lan.End, Size: 16}, "want IPv4"},
		{Pool{Network: "n", Start: lan.End, End: lan.Start, Size: 16}, "before its start"},
		{Pool{Network: "n", Start: lan.Start, End: lan.End}, "chunk size 0"},
		{Pool{Network: "n", Start: netip.MustParseAddr("10.0.0.0"), End: netip.MustParseAddr("10.255.255.255"), Size: 16}, "at most 65536"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v): got %v, want %q", tc.p, err, tc.want)
		}
	}
}

// The ID is part of the wire format (gossip's chunk claims): it must not
// change between builds, and it must differ when the config does.
func TestID(t *testing.T) {
	// FNV-1a 64 of "lan|192.168.50.100|192.168.50.149|16".
	if got, want := lan.ID(), uint64(0x04f5aedda3330278); got != want {
		t.Errorf("ID: got %016x, want %016x", got, want)
	}
	other := lan
	other.End = netip.MustParseAddr("192.168.50.150")
	renamed := lan
	renamed.Network = "lan2"
	resized := lan
	resized.Size = 8
	for _, p := range []Pool{other, renamed, resized} {
		if p.ID() == lan.ID() {
			t.Errorf("%v has the same ID as %v", p, lan)
		}
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	// Hosts that start together with the same (empty) view mostly pick
	// different chunks; once they see each other, the claims settle on
	// distinct chunks whatever the order.
	hosts := []string{"h1", "h2", "h3", "h4"}
	claims := map[string]Claim{}
	for round := range 6 {
		for _, h := range hosts {
			var others []Claim
			for n, c := range claims {
				if n != h {
					others = append(others, c)
				}
			}
			next, _, err := Decide(h, lan, claims[h], others, now.Add(time.Duration(round)*time.Second))
			if err != nil {
				t.Fatalf("round %d %s: %v", round, h, err)
			}
			claims[h] = next
		}
	}
	seen := map[int]string{}
	for _, h := range hosts {
		c := claims[h]
		if !c.Valid || c.Index < 0 || c.Index >= lan.Len() {
			t.Fatalf("%s: claim %+v, want a chunk of 0..%d", h, c, lan.Len()-1)
		}
		if o, dup := seen[c.Index]; dup {
			t.Fatalf("%s and %s both hold chunk %d", h, o, c.Index)
		}
		seen[c.Index] = h
	}
	// A fifth host finds every chunk held.
	var all []Claim
	for _, c := range claims {
		all = append(all, c)
	}
	if _, _, err := Decide("h5", lan, Claim{}, all, now); !errors.Is(err, ErrFull) {
		t.Errorf("a fifth host: got %v, want ErrFull", err)
	}
	// A conflict: the earlier claim keeps the chunk, the later moves.
	old := Claim{Node: "old", Index: 2, Since: now.Add(-time.Hour).UnixNano(), Live: true, Valid: true}
	young := Claim{Node: "young", Index: 2, Since: now.UnixNano(), Live: true, Valid: true}
	if c, changed, err := Decide("old", lan, old, []Claim{young}, now); err != nil || changed || c.Index != 2 {
		t.Errorf("the earlier claim: got %+v %v %v, want chunk 2 kept", c, changed, err)
	}
	if c, changed, err := Decide("young", lan, young, []Claim{old}, now); err != nil || !changed || c.Index == 2 || !c.Valid {
		t.Errorf("the later claim: got %+v %v %v, want another chunk", c, changed, err)
	}
	// A dead host keeps its chunk (it is expected back).
	dead := old
	dead.Live = false
	if c, _, _ := Decide("x", lan, Claim{Index: 2, Since: now.UnixNano(), Valid: true}, []Claim{dead}, now); c.Index == 2 {
		t.Errorf("took a dead host's chunk: %+v", c)
	}
	// Claims past the last chunk are not believed; chunks past it are
	// never chosen.
	for i := range 50 {
		c, _, err := Decide(fmt.Sprintf("n%d", i), lan, Claim{}, []Claim{{Node: "bogus", Index: 7, Valid: true, Live: true}}, now)
		if err != nil || c.Index >= lan.Len() {
			t.Fatalf("n%d: %+v %v", i, c, err)
		}
	}
}

func TestDecideOneChunk(t *testing.T) {
	p := Pool{Network: "n", Start: netip.MustParseAddr("10.0.0.1"), End: netip.MustParseAddr("10.0.0.8"), Size: 16}
	now := time.Unix(1800000000, 0)
	c, changed, err := Decide("h1", p, Claim{}, nil, now)
	if err != nil || !changed || c.Index != 0 {
		t.Fatalf("got %+v %v %v, want chunk 0", c, changed, err)
	}
	if _, _, err := Decide("h2", p, Claim{}, []Claim{c}, now); !errors.Is(err, ErrFull) {
		t.Fatalf("second host: %v, want ErrFull", err)
	}
}

package pairkey_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

func TestAssignSPIs(t *testing.T) {
	const x, y, z = 0x90000001, 0x90000002, 0x90000003
	cases := []struct {
		name  string
		cands map[string][]uint32
		taken map[uint32]bool
		want  map[string]uint32
	}{
		{"no collision: first candidates",
			map[string][]uint32{"b": {y, z}, "a": {x, y}}, nil,
			map[string]uint32{"a": x, "b": y}},
		{"collision: earlier name keeps it, later takes its next",
			map[string][]uint32{"host-b": {x, z}, "host-a": {x, y}}, nil,
			map[string]uint32{"host-a": x, "host-b": z}},
		{"all share every candidate: then probing upwards from the last",
			map[string][]uint32{"a": {x, y}, "b": {x, y}, "c": {x, y}, "d": {x, y}}, nil,
			map[string]uint32{"a": x, "b": y, "c": y + 1, "d": y + 2}},
		{"taken avoided",
			map[string][]uint32{"a": {x, y}, "b": {z, x}}, map[uint32]bool{x: true},
			map[string]uint32{"a": y, "b": z}},
		{"probe skips taken",
			map[string][]uint32{"a": {x}, "b": {x}}, map[uint32]bool{x + 1: true, x + 2: true},
			map[string]uint32{"a": x, "b": x + 3}},
		{"probe wraps past 0xffffffff to DerivedSPIMin",
			map[string][]uint32{"a": {0xffffffff}, "b": {0xffffffff}}, map[uint32]bool{pairkey.DerivedSPIMin: true},
			map[string]uint32{"a": 0xffffffff, "b": pairkey.DerivedSPIMin + 1}},
		{"reserved SPIs (< 0x100) never handed out",
			map[string][]uint32{"a": {0, 1, 0xff, x}}, nil,
			map[string]uint32{"a": x}},
		{"manual-range candidate below DerivedSPIMin is usable",
			map[string][]uint32{"a": {0x100}, "b": {0x100}}, nil,
			map[string]uint32{"a": 0x100, "b": pairkey.DerivedSPIMin}},
		{"no candidates at all",
			map[string][]uint32{"a": nil, "b": {}}, nil,
			map[string]uint32{"a": pairkey.DerivedSPIMin, "b": pairkey.DerivedSPIMin + 1}},
		{"names in byte order, not insertion order",
			// B, Z, a: B takes x; Z probes from x to y; a probes from y to z.
			map[string][]uint32{"Z": {x}, "a": {x, y}, "B": {x, z}}, nil,
			map[string]uint32{"B": x, "Z": y, "a": z}},
		{"empty", map[string][]uint32{}, nil, map[string]uint32{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.taken)
			got := pairkey.AssignSPIsAvoiding(tc.cands, tc.taken)
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %x, want %x", got, tc.want)
			}
			if !maps.Equal(tc.taken, before) {
				t.Errorf("taken modified: got %v, want %v", tc.taken, before)
			}
			if tc.taken == nil && !maps.Equal(pairkey.AssignSPIs(tc.cands), got) {
				t.Errorf("AssignSPIs differs from AssignSPIsAvoiding(nil)")
			}
		})
	}
}

// TestAssignSPIsProperty: with candidates drawn from a tiny space (so that
// collisions are the rule), for many random inputs: one SPI per sender, all
// distinct, none taken or reserved, and the same result for maps built in a
// different order (both ends of a pair build theirs independently).
func TestAssignSPIsProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		n := 1 + r.IntN(30)
		cands := make(map[string][]uint32, n)
		names := make([]string, n)
		for i := range n {
			names[i] = fmt.Sprintf("host-%d", r.IntN(1000))
			cs := make([]uint32, r.IntN(4))
			for j := range cs {
				cs[j] = 0x80000000 + uint32(r.IntN(6))
			}
			cands[names[i]] = cs
		}
		taken := map[uint32]bool{}
		for range r.IntN(4) {
			taken[0x80000000+uint32(r.IntN(8))] = true
		}
		got := pairkey.AssignSPIsAvoiding(cands, taken)
		if len(got) != len(cands) {
			t.Fatalf("round %d: %d SPIs for %d senders", round, len(got), len(cands))
		}
		seen := map[uint32]string{}
		for name, spi := range got {
			if _, ok := cands[name]; !ok {
				t.Fatalf("round %d: SPI for unknown sender %q", round, name)
			}
			if spi < pairkey.MinSPI || taken[spi] {
				t.Fatalf("round %d: %s got reserved or taken SPI %#x", round, name, spi)
			}
			if o, dup := seen[spi]; dup {
				t.Fatalf("round %d: %s and %s both got %#x", round, name, o, spi)
			}
			seen[spi] = name
		}
		// The same content inserted in reverse order into fresh maps.
		cands2 := make(map[string][]uint32, n)
		for i := n - 1; i >= 0; i-- {
			cands2[names[i]] = append([]uint32(nil), cands[names[i]]...)
		}
		taken2 := maps.Clone(taken)
		if got2 := pairkey.AssignSPIsAvoiding(cands2, taken2); !maps.Equal(got, got2) {
			t.Fatalf("round %d: not deterministic: %#x vs %#x", round, got, got2)
		}
	}
}

// TestAssignDerived: 200 senders to one receiver with real candidates.
// Receiver and each sender compute the same assignment from what they
// publish, and the SPIs are distinct.
func TestAssignDerived(t *testing.T) {
	r := newRand(8)
	recv := newHost(t, r, 9)
	cands := map[string][]uint32{}
	for i := range 200 {
		s := newHost(t, r, uint32(i))
		c, err := pairkey.SPICandidates(testClusterKey, s.Party(), recv.Party())
		if err != nil {
			t.Fatal(err)
		}
		cands[fmt.Sprintf("host-%03d", i)] = c
	}
	got := pairkey.AssignSPIs(cands)
	seen := map[uint32]bool{}
	firsts := 0
	for name, spi := range got {
		if seen[spi] || spi < pairkey.DerivedSPIMin {
			t.Fatalf("%s: SPI %#x duplicate or below %#x", name, spi, pairkey.DerivedSPIMin)
		}
		seen[spi] = true
		if spi == cands[name][0] {
			firsts++
		}
	}
	// A collision among 200 has odds of about 200²/2^32 ≈ 1e-5: with this
	// fixed seed there is none, so everyone has its first candidate.
	if firsts != len(got) {
		t.Errorf("%d of %d senders on their first candidate, want all", firsts, len(got))
	}
}

// TestReceiverSPIs: the receiver and a sender compute the same map from the
// same membership, it matches SPICandidates + AssignSPIs, the receiver's own
// entry is skipped, and the SA's SPI is the sender's entry.
func TestReceiverSPIs(t *testing.T) {
	r := newRand(14)
	hosts := map[string]pairkey.Local{}
	members := map[string]pairkey.Party{}
	for i := range 12 {
		name := fmt.Sprintf("host-%02d", i)
		hosts[name] = newHost(t, r, uint32(i))
		members[name] = hosts[name].Party()
	}
	recv := hosts["host-05"]
	got, err := pairkey.ReceiverSPIs(testClusterKey, recv.Party(), members)
	if err != nil {
		t.Fatal(err)
	}
	if _, self := got["host-05"]; self || len(got) != 11 {
		t.Fatalf("got %d entries (receiver included: %v), want 11 without the receiver", len(got), self)
	}
	cands := map[string][]uint32{}
	for name, p := range members {
		if name != "host-05" {
			cands[name], _ = pairkey.SPICandidates(testClusterKey, p, recv.Party())
		}
	}
	if want := pairkey.AssignSPIs(cands); !maps.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
	out, _ := mustPair(t, esp.AES128GCM, testClusterKey, hosts["host-07"], recv.Party())
	if got["host-07"] != out.SPI {
		t.Errorf("host-07's SPI: map %#x, SA %#x", got["host-07"], out.SPI)
	}
	if _, err := pairkey.ReceiverSPIs(nil, recv.Party(), members); !errors.Is(err, pairkey.ErrClusterKey) {
		t.Errorf("no cluster key: got %v, want ErrClusterKey", err)
	}
}

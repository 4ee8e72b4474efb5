package pairkey_test

import (
	"fmt"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

// BenchmarkOutbound is the control-plane cost of one direction towards one
// peer (four X25519, two HKDF-Extract, two HKDF-Expand); the daemon pays it
// per peer at each rotation.
func BenchmarkOutbound(b *testing.B) {
	r := newRand(10)
	a, p := newHost(b, r, 1), newHost(b, r, 1).Party()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pairkey.Outbound(esp.AES128GCM, testClusterKey, a, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPair: both directions, sharing the X25519 results.
func BenchmarkPair(b *testing.B) {
	r := newRand(11)
	a, p := newHost(b, r, 1), newHost(b, r, 1).Party()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := pairkey.Pair(esp.AES128GCM, testClusterKey, a, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSPICandidates: one pair's candidates, of which a host needs N²
// for N members to assign its own SPIs (each receiver's N senders).
func BenchmarkSPICandidates(b *testing.B) {
	r := newRand(12)
	s, rc := newHost(b, r, 1).Party(), newHost(b, r, 1).Party()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pairkey.SPICandidates(testClusterKey, s, rc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAssignSPIs: one receiver with 200 senders.
func BenchmarkAssignSPIs200(b *testing.B) {
	r := newRand(13)
	recv := newHost(b, r, 1).Party()
	cands := map[string][]uint32{}
	for i := range 200 {
		c, err := pairkey.SPICandidates(testClusterKey, newHost(b, r, 1).Party(), recv)
		if err != nil {
			b.Fatal(err)
		}
		cands[fmt.Sprintf("host-%03d", i)] = c
	}
	b.ReportAllocs()
	for b.Loop() {
		pairkey.AssignSPIs(cands)
	}
}

package pairkey

import (
	"math"
	"slices"
)

// MinSPI is the lowest SPI AssignSPIs hands out: 1–255 are reserved by IANA
// and 0 is the non-ESP marker on UDP/4500 (RFC 4303 §2.1, RFC 3948 §2.2).
const MinSPI uint32 = 0x100

// AssignSPIs gives each sender to one receiver a distinct SPI. candidates
// maps the sender's name to its SPICandidates towards that receiver. It is
// AssignSPIsAvoiding with nothing reserved.
func AssignSPIs(candidates map[string][]uint32) map[string]uint32 {
	return AssignSPIsAvoiding(candidates, nil)
}

// AssignSPIsAvoiding is AssignSPIs that also keeps out of the SPIs in taken.
// The rule is deterministic, independent of map order: senders in byte order
// of their names, each takes its first candidate that is at least MinSPI and
// neither in taken nor already given to an earlier sender. A sender whose
// candidates are all taken (for derived candidates about (n/2^31)^8 with n
// SPIs in use, so never in practice; tests force it) probes upwards from its
// last candidate through [DerivedSPIMin, 0xffffffff], wrapping, to the first
// free value.
//
// Both ends of a pair must get the same result, so candidates and taken must
// be the same at both: the members each sees (they differ only while gossip
// converges, and then only matter if two candidates collide) and a taken set
// both know — SPIs fixed by configuration, say. A receiver's own installed
// SAs (those kept for the grace period) are not such a set: the senders
// cannot see them. docs/keys.md explains what to do instead.
//
// taken is not modified. The result has one entry per sender, all distinct,
// none in taken, assuming fewer than 2^31 senders and taken SPIs together.
func AssignSPIsAvoiding(candidates map[string][]uint32, taken map[uint32]bool) map[string]uint32 {
	names := make([]string, 0, len(candidates))
	for n := range candidates {
		names = append(names, n)
	}
	slices.Sort(names)

	out := make(map[string]uint32, len(names))
	used := make(map[uint32]bool, len(names))
	free := func(v uint32) bool { return v >= MinSPI && !taken[v] && !used[v] }
	for _, n := range names {
		spi, ok := uint32(0), false
		for _, c := range candidates[n] {
			if free(c) {
				spi, ok = c, true
				break
			}
		}
		if !ok {
			spi = DerivedSPIMin
			if cs := candidates[n]; len(cs) > 0 && cs[len(cs)-1] >= DerivedSPIMin {
				spi = cs[len(cs)-1]
			}
			for !free(spi) {
				if spi == math.MaxUint32 {
					spi = DerivedSPIMin
				} else {
					spi++
				}
			}
		}
		used[spi] = true
		out[n] = spi
	}
	return out
}

// ReceiverSPIs computes the SPI candidates of every sender towards receiver
// and assigns them (AssignSPIs): the SPIs receiver uses for its inbound SAs,
// which each sender computes identically from the same membership. senders
// maps a member's name to what it publishes; to get the SPI of an SA whose
// sender uses an older ephemeral key (during its switch delay), put that
// Party in the sender's entry. receiver itself, if present, is skipped.
func ReceiverSPIs(clusterKey []byte, receiver Party, senders map[string]Party) (map[string]uint32, error) {
	kc, err := clusterPRK(clusterKey)
	if err != nil {
		return nil, err
	}
	defer clear(kc)
	cands := make(map[string][]uint32, len(senders))
	for name, s := range senders {
		if s.Identity == receiver.Identity {
			continue
		}
		c := candidates(kc, s, receiver)
		cands[name] = c[:]
	}
	return AssignSPIs(cands), nil
}

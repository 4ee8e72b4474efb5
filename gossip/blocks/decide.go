package blocks

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Decide is what a host runs whenever its view of the membership changes. It
// is given the host's name, its current block claim (the zero Claim if it has
// none yet) and the claims it currently sees from every member not known to
// have left (its own static prefixes included), and returns the claim it
// should hold now, and whether that differs from current:
//
//   - if current is a block of cidr split into /bits and Owners of the view
//     gives it to self, it is kept, Since unchanged;
//   - otherwise (no claim yet, a lost conflict, or a block that is no longer
//     part of cidr/bits) a free block is chosen with Choose and claimed with
//     Since = now.
//
// Any non-static claims of self in claims (stale copies of what self
// published earlier) are ignored: current is authoritative. The returned
// claim has Live set. When no block is free, Decide returns the zero Claim, a
// changed flag that is true if current was a claim, and an error wrapping
// ErrFull: the caller must stop routing its lost block.
func Decide(self string, current Claim, claims []Claim, cidr netip.Prefix, bits int, now time.Time) (Claim, bool, error) {
	if self == "" {
		return Claim{}, false, errors.New("blocks: decide: empty node name")
	}
	if _, err := validate(cidr, bits); err != nil {
		return Claim{}, false, fmt.Errorf("blocks: decide for %s: %w", self, err)
	}
	has := current.Block.IsValid()
	if has && current.Node != self {
		return Claim{}, false, fmt.Errorf("blocks: decide for %s: current claim on %v belongs to %q", self, current.Block, current.Node)
	}
	if current.Static {
		return Claim{}, false, fmt.Errorf("blocks: decide for %s: current claim on %v is static; only block claims are decided", self, current.Block)
	}
	current.Live = true
	if has {
		current.Block = current.Block.Masked()
	}

	view := make([]Claim, 0, len(claims)+1)
	for _, c := range claims {
		if c.Node == self && !c.Static {
			continue
		}
		view = append(view, c)
	}
	if has && current.Block.Bits() == bits && cidr.Contains(current.Block.Addr()) {
		if Owners(append(view, current))[current.Block] == self {
			return current, false, nil
		}
	}

	p, ok := Choose(cidr, bits, self, view)
	if !ok {
		return Claim{}, has, fmt.Errorf("blocks: decide for %s in %v: %w", self, cidr, ErrFull)
	}
	return Claim{Node: self, Block: p, Since: now.UnixNano(), Live: true}, true, nil
}

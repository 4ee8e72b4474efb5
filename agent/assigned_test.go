package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/gossip/blocks"
	"net/netip"
)

// An assigned block (Kubernetes' spec.podCIDR) is used at once, with no
// quorum, settle time or persistence, and a member claiming the same block
// later does not move it.
func TestAssignedBlock(t *testing.T) {
	own := netip.MustParsePrefix("10.42.5.0/24")
	h := newHarness(t, func(c *Config) {
		c.MayClaimAlone = false // no quorum needed either
		c.ClaimSettle = time.Minute
		c.Assigned = blocks.Claim{Block: own, Since: t0.Add(-time.Hour).UnixNano()}
	})
	if got := h.r.local; !slices.Equal(got, []netip.Prefix{own}) {
		t.Fatalf("local prefixes after Start: got %v, want [%v]", got, own)
	}
	// h2 publishes our block with a later date, h3 its own.
	h2 := newRemote(t, "h2", 2, "10.42.5.0/24", t0)
	h3 := newRemote(t, "h3", 3, "10.42.7.0/24", t0)
	h.up(h2, h3)
	v := h.view()
	if v.Block != own.String() || v.BlockNote != "" {
		t.Fatalf("view: got block %q note %q, want %v and no note", v.Block, v.BlockNote, own)
	}
	if got, want := h.k.prefixes(), []string{"10.42.7.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("kernel routes: got %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "block.json")); !os.IsNotExist(err) {
		t.Fatalf("block.json: got %v, want none written for an assigned block", err)
	}
	if got := h.a.Info().Block; got != own {
		t.Fatalf("published block: got %v, want %v", got, own)
	}
}

func TestAssignedBlockRefused(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"10.43.0.0/24", "not a /24 block of 10.42.0.0/16"},
		{"10.42.0.0/23", "not a /24 block"},
	} {
		cfg := Config{Name: "h1", Encap: EncapVXLAN, CIDR: cidr, BlockBits: 24,
			Blocks: blocks.Open(filepath.Join(t.TempDir(), "b.json")), Pins: &Pins{},
			Assigned: blocks.Claim{Block: netip.MustParsePrefix(tc.block)}}
		_, err := New(cfg, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("assigned %s: got %v, want an error containing %q", tc.block, err, tc.want)
		}
	}
}

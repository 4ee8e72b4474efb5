package blocks

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	cluster = pfx("10.42.0.0/16")
	t0      = time.Unix(1_700_000_000, 0)
)

func TestDecide(t *testing.T) {
	mine := Claim{Node: "me", Block: pfx("10.42.9.0/24"), Since: 100, Live: true}
	first, _ := Choose(cluster, 24, "me", nil)
	tests := []struct {
		name        string
		current     Claim
		claims      []Claim
		wantBlock   netip.Prefix // zero: a new block, chosen by Choose (checked separately)
		wantSince   int64
		wantChanged bool
	}{
		{
			name:        "first start takes the hashed block",
			claims:      []Claim{{Node: "a", Block: pfx("10.42.1.0/24"), Since: 1}},
			wantBlock:   first,
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "keeps an uncontested block",
			current:     mine,
			claims:      []Claim{{Node: "a", Block: pfx("10.42.1.0/24"), Since: 1}},
			wantBlock:   mine.Block,
			wantSince:   100,
			wantChanged: false,
		},
		{
			name:        "keeps a block against a younger claim",
			current:     mine,
			claims:      []Claim{{Node: "a", Block: mine.Block, Since: 101, Live: true}},
			wantBlock:   mine.Block,
			wantSince:   100,
			wantChanged: false,
		},
		{
			name:        "keeps a block against an equal-age claim from a larger name",
			current:     mine,
			claims:      []Claim{{Node: "zz", Block: mine.Block, Since: 100}},
			wantBlock:   mine.Block,
			wantSince:   100,
			wantChanged: false,
		},
		{
			name:        "moves after losing to an older claim",
			current:     mine,
			claims:      []Claim{{Node: "a", Block: mine.Block, Since: 99}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves after losing a tie to a smaller name",
			current:     mine,
			claims:      []Claim{{Node: "aa", Block: mine.Block, Since: 100}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves off a block a dead owner holds",
			current:     mine,
			claims:      []Claim{{Node: "a", Block: mine.Block, Since: 50, Live: false}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves when a static prefix overlaps",
			current:     mine,
			claims:      []Claim{{Node: "s", Block: pfx("10.42.9.64/26"), Since: 900, Static: true}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves when its own static prefix overlaps",
			current:     mine,
			claims:      []Claim{{Node: "me", Block: pfx("10.42.0.0/20"), Static: true}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "ignores a stale published copy of its own older claim",
			current:     mine,
			claims:      []Claim{{Node: "me", Block: pfx("10.42.200.0/24"), Since: 1}, {Node: "a", Block: mine.Block, Since: 150}},
			wantBlock:   mine.Block,
			wantSince:   100,
			wantChanged: false,
		},
		{
			// Others resolve against what "me" publishes now (Since 100) and
			// give the block to "a"; an older stale copy must not outvote them.
			name:        "a stale older copy of its own claim does not save it",
			current:     mine,
			claims:      []Claim{{Node: "me", Block: mine.Block, Since: 50}, {Node: "a", Block: mine.Block, Since: 70}},
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves when the block is outside the cluster CIDR",
			current:     Claim{Node: "me", Block: pfx("10.99.9.0/24"), Since: 1},
			wantBlock:   first,
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
		{
			name:        "moves when the block length changed",
			current:     Claim{Node: "me", Block: pfx("10.42.9.0/25"), Since: 1},
			wantBlock:   first,
			wantSince:   t0.UnixNano(),
			wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := Decide("me", tt.current, tt.claims, cluster, 24, t0)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged || got.Since != tt.wantSince || got.Node != "me" || !got.Live || got.Static {
				t.Fatalf("got %+v changed=%v; want since %d, changed=%v, node me, live", got, changed, tt.wantSince, tt.wantChanged)
			}
			if tt.wantBlock.IsValid() && got.Block != tt.wantBlock {
				t.Fatalf("got block %v, want %v", got.Block, tt.wantBlock)
			}
			// Whatever it holds, it owns in its own view, and it holds a block
			// of the cluster.
			if got.Block.Bits() != 24 || !cluster.Contains(got.Block.Addr()) {
				t.Fatalf("got %v, not a /24 of %v", got.Block, cluster)
			}
			view := append(append([]Claim(nil), tt.claims...), got)
			if o := Owners(view)[got.Block]; o != "me" {
				t.Fatalf("got %v, owned by %q in the resulting view, want me", got.Block, o)
			}
			// Running again on the new state changes nothing.
			again, changed2, err := Decide("me", got, tt.claims, cluster, 24, t0.Add(time.Second))
			if err != nil || changed2 || again != got {
				t.Fatalf("second run: got %+v changed=%v err=%v, want %+v unchanged", again, changed2, err, got)
			}
		})
	}
}

func TestDecideErrors(t *testing.T) {
	full := []Claim{{Node: "s", Block: pfx("10.42.0.0/16"), Static: true}}
	mine := Claim{Node: "me", Block: pfx("10.42.9.0/24"), Since: 1}
	tests := []struct {
		name        string
		self        string
		current     Claim
		claims      []Claim
		cidr        netip.Prefix
		bits        int
		want        string
		wantChanged bool
	}{
		{name: "empty name", current: Claim{}, cidr: cluster, bits: 24, want: "empty node name"},
		{name: "bad cidr", self: "me", cidr: pfx("10.42.1.0/16"), bits: 24, want: "host bits"},
		{name: "bad bits", self: "me", cidr: cluster, bits: 8, want: "want /16../32"},
		{name: "someone else's claim", self: "me", current: Claim{Node: "you", Block: pfx("10.42.1.0/24")}, cidr: cluster, bits: 24, want: `belongs to "you"`},
		{name: "static current", self: "me", current: Claim{Node: "me", Block: pfx("10.42.1.0/24"), Static: true}, cidr: cluster, bits: 24, want: "is static"},
		{name: "full, no claim", self: "me", claims: full, cidr: cluster, bits: 24, want: "no free block"},
		{name: "full, lost claim", self: "me", current: mine, claims: full, cidr: cluster, bits: 24, want: "no free block", wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := Decide(tt.self, tt.current, tt.claims, tt.cidr, tt.bits, t0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want error containing %q", got, err, tt.want)
			}
			if strings.Contains(tt.want, "no free block") && !errors.Is(err, ErrFull) {
				t.Errorf("got %v, want errors.Is ErrFull", err)
			}
			if got != (Claim{}) || changed != tt.wantChanged {
				t.Errorf("got %+v changed=%v, want zero claim changed=%v", got, changed, tt.wantChanged)
			}
		})
	}
}

// TestDecideOrderIndependent: every host resolves a contested view the same
// way, whatever order gossip delivered the claims in.
func TestDecideOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for iter := range 300 {
		claims := randomClaims(r)
		cidr, bits := pfx("10.42.0.0/20"), 24
		for _, self := range []string{"n0", "n3", "n11", "fresh"} {
			var current Claim
			for _, c := range claims {
				if c.Node == self && !c.Static && c.Block.Bits() == bits {
					current = c
					current.Live = true
					break
				}
			}
			want, wantChanged, wantErr := Decide(self, current, claims, cidr, bits, t0)
			for range 5 {
				sh := append([]Claim(nil), claims...)
				r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				got, changed, err := Decide(self, current, sh, cidr, bits, t0)
				if got != want || changed != wantChanged || (err == nil) != (wantErr == nil) {
					t.Fatalf("iter %d %s: shuffled gives %+v %v %v, original %+v %v %v", iter, self, got, changed, err, want, wantChanged, wantErr)
				}
			}
		}
	}
}

// TestRestartKeepsBlock is the issue's "each keeps its block after a
// restart": a host's claim survives in its Store while it is down; a
// newcomer that never saw it takes the same block; when the host returns
// with its older Since, it keeps the block and the newcomer moves.
func TestRestartKeepsBlock(t *testing.T) {
	dir := t.TempDir()
	store := Open(filepath.Join(dir, "block.json"))
	others := []Claim{{Node: "a", Block: pfx("10.42.1.0/24"), Since: t0.UnixNano(), Live: true}}

	// First start: no state, claim and persist.
	cur, ok, err := store.Load()
	if err != nil || ok {
		t.Fatalf("first Load: got %+v, %v, %v; want nothing", cur, ok, err)
	}
	held, changed, err := Decide("old", cur, others, cluster, 24, t0.Add(time.Second))
	if err != nil || !changed {
		t.Fatalf("first Decide: got %+v, %v, %v", held, changed, err)
	}
	if err := store.Save(held); err != nil {
		t.Fatal(err)
	}

	// "old" is down long enough that memberlist forgot it; a newcomer whose
	// hash lands on the same block takes it. Find such a name.
	newcomer := ""
	for i := range 100000 {
		name := "new" + strconv.Itoa(i)
		if p, _ := Choose(cluster, 24, name, others); p == held.Block {
			newcomer = name
			break
		}
	}
	if newcomer == "" {
		t.Fatal("no newcomer name hashes to the held block")
	}
	grab, _, err := Decide(newcomer, Claim{}, others, cluster, 24, t0.Add(time.Hour))
	if err != nil || grab.Block != held.Block {
		t.Fatalf("newcomer: got %+v, %v; want block %v", grab, err, held.Block)
	}

	// Restart: load the persisted claim and rejoin; the view now has the
	// newcomer's younger claim on the same block.
	restarted, ok, err := Open(store.Path()).Load()
	if err != nil || !ok {
		t.Fatalf("reload: got %+v, %v, %v", restarted, ok, err)
	}
	if restarted.Block != held.Block || restarted.Since != held.Since || restarted.Node != "old" {
		t.Fatalf("reload: got %+v, want %+v", restarted, held)
	}
	view := append(append([]Claim(nil), others...), grab)
	back, changed, err := Decide("old", restarted, view, cluster, 24, t0.Add(2*time.Hour))
	if err != nil || changed || back.Block != held.Block || back.Since != held.Since {
		t.Fatalf("returning host: got %+v changed=%v err=%v; want to keep %v since %d", back, changed, err, held.Block, held.Since)
	}
	// The newcomer sees the returning host and moves.
	view = append(append([]Claim(nil), others...), back)
	moved, changed, err := Decide(newcomer, grab, view, cluster, 24, t0.Add(2*time.Hour))
	if err != nil || !changed || moved.Block == held.Block {
		t.Fatalf("newcomer after return: got %+v changed=%v err=%v; want a different block than %v", moved, changed, err, held.Block)
	}
	// Both views agree.
	all := append(append([]Claim(nil), others...), back, moved)
	o := Owners(all)
	if o[held.Block] != "old" || o[moved.Block] != newcomer {
		t.Fatalf("owners: got %v", o)
	}
}

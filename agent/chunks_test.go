package agent

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/lanpool"
)

var lanPool = lanpool.Pool{Network: "lan", Start: netip.MustParseAddr("192.168.50.100"), End: netip.MustParseAddr("192.168.50.163"), Size: 16}

func withChunks(dir string) harnessOpt {
	return func(c *Config) {
		c.Chunks = lanpool.OpenStore(filepath.Join(dir, "chunks.json"))
		c.ClaimSettle = 2 * time.Second
	}
}

// A chunk asked for is claimed at the next step, published, handed out
// after the settle time, and kept by a restarted agent at once.
func TestChunkClaimSettleRestore(t *testing.T) {
	h := newHarness(t)
	h.newAgent(withChunks(h.dir))
	v, err := h.a.WantChunk(lanPool)
	if err != nil || v.Ready || v.First != "" {
		t.Fatalf("before a step: %+v %v, want nothing claimed", v, err)
	}
	select {
	case <-h.a.kick:
	default:
		t.Fatal("WantChunk did not wake the control loop")
	}
	h.step()
	v, _ = h.a.WantChunk(lanPool)
	if v.First == "" || v.Ready || !strings.Contains(v.Note, "not handed out before") {
		t.Fatalf("after a step: %+v, want a chunk settling", v)
	}
	in := h.a.Info()
	if len(in.Chunks) != 1 || in.Chunks[0].Pool != lanPool.ID() {
		t.Fatalf("published %+v, want one claim in pool %x", in.Chunks, lanPool.ID())
	}
	if f, _ := lanPool.Chunk(int(in.Chunks[0].Index)); f.String() != v.First {
		t.Fatalf("published index %d, view says %s", in.Chunks[0].Index, v.First)
	}
	if len(h.m.published) == 0 || len(h.m.published[len(h.m.published)-1].Chunks) != 1 {
		t.Fatal("the claim was not published to the membership")
	}
	h.clock.add(2 * time.Second)
	h.step()
	if v2, _ := h.a.WantChunk(lanPool); !v2.Ready || v2.First != v.First {
		t.Fatalf("after the settle time: %+v, want %s ready", v2, v.First)
	}
	// Restart: the same chunk, ready at once.
	h.newAgent(withChunks(h.dir))
	if v3, _ := h.a.WantChunk(lanPool); !v3.Ready || v3.First != v.First || v3.Last != v.Last {
		t.Fatalf("after a restart: %+v, want %s-%s ready", v3, v.First, v.Last)
	}
	// Another range under the same network name is refused.
	other := lanPool
	other.End = netip.MustParseAddr("192.168.50.200")
	if _, err := h.a.WantChunk(other); err == nil || !strings.Contains(err.Error(), "same range") {
		t.Fatalf("a second range for the network: %v, want an error", err)
	}
}

// An earlier claim of another member on our chunk wins: we move, and its
// chunk is never ours again; a claim with an implausible since is refused.
func TestChunkConflict(t *testing.T) {
	h := newHarness(t)
	h.newAgent(withChunks(h.dir))
	h.a.WantChunk(lanPool)
	h.step()
	ours := h.a.Info().Chunks[0]
	r := newRemote(t, "h2", 2, "10.42.9.0/24", t0.Add(-time.Hour))
	r.info.Chunks = []gossip.ChunkClaim{{Pool: lanPool.ID(), Index: ours.Index, Since: t0.Add(-time.Hour).UnixNano()}}
	h.m.set(r.member())
	h.step()
	now := h.a.Info().Chunks
	if len(now) != 1 || now[0].Index == ours.Index {
		t.Fatalf("after an earlier claim on chunk %d: %+v, want another chunk", ours.Index, now)
	}
	if !strings.Contains(h.logs.String(), "chunk lost to an earlier claim") {
		t.Error("the move was not logged")
	}
	// A member claiming our new chunk with a since from 2020 is not
	// believed.
	r3 := newRemote(t, "h3", 3, "10.42.10.0/24", t0.Add(-time.Hour))
	r3.info.Chunks = []gossip.ChunkClaim{{Pool: lanPool.ID(), Index: now[0].Index, Since: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}}
	h.m.set(r3.member())
	h.step()
	if again := h.a.Info().Chunks; again[0].Index != now[0].Index {
		t.Fatalf("moved for an implausible claim: %+v", again)
	}
	if !strings.Contains(h.logs.String(), "chunk claim refused") {
		t.Error("the implausible claim was not logged")
	}
}

// Without having joined anyone (and not allowed to start alone), no chunk
// is claimed, and the view says why.
func TestChunkNeedsQuorum(t *testing.T) {
	h := newHarness(t)
	h.newAgent(withChunks(h.dir), func(c *Config) { c.MayClaimAlone = false })
	h.a.WantChunk(lanPool)
	h.step()
	v, _ := h.a.WantChunk(lanPool)
	if v.First != "" || !strings.Contains(v.Note, "not joined") {
		t.Fatalf("%+v, want no chunk, noting that the host has not joined", v)
	}
	if len(h.a.Info().Chunks) != 0 {
		t.Fatal("a claim was published")
	}
}

// A member publishing several claims in one range gets only its first
// believed: it cannot take the range's chunks for itself.
func TestChunkOnePerMember(t *testing.T) {
	h := newHarness(t)
	h.newAgent(withChunks(h.dir))
	r := newRemote(t, "greedy", 2, "10.42.9.0/24", t0.Add(-time.Hour))
	old := t0.Add(-time.Hour).UnixNano()
	for i := range lanPool.Len() {
		r.info.Chunks = append(r.info.Chunks, gossip.ChunkClaim{Pool: lanPool.ID(), Index: uint16(i), Since: old})
	}
	h.m.set(r.member())
	h.a.WantChunk(lanPool)
	h.step()
	ours := h.a.Info().Chunks
	if len(ours) != 1 || ours[0].Index == 0 {
		t.Fatalf("with a member claiming every chunk: %+v, want one of chunks 1..%d", ours, lanPool.Len()-1)
	}
}

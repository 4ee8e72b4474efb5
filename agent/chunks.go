package agent

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/lanpool"
)

// Chunks of shared LAN ranges (package lanpool; the CNI plugin's uplink
// model). The plugin asks for a chunk of its network's range through the
// daemon (WantChunk); from then on the agent holds a claim in that pool,
// publishes it with its node info, resolves it against the members'
// claims on every step as it does its block, and persists it (ChunkStore),
// so a restarted host presents the same chunk and Since and keeps it. The
// block rules apply: a new chunk needs the quorum of block holders
// (mayClaim), and a fresh claim is handed out only after ClaimSettle.

// ChunkStore persists the pools this host claims in and its claims.
type ChunkStore interface {
	Load() ([]lanpool.Held, error)
	Save([]lanpool.Held) error
}

// ChunkView is what WantChunk and the view report of one pool.
type ChunkView struct {
	Network string `json:"network"`
	Range   string `json:"range"` // first-last of the pool
	Size    int    `json:"chunk_size"`
	// First and Last bound this host's chunk; empty while it has none.
	First string `json:"first,omitempty"`
	Last  string `json:"last,omitempty"`
	// Ready: the chunk may be handed out (claimed and settled).
	Ready bool   `json:"ready"`
	Note  string `json:"note,omitempty"`
}

// poolState is one pool this host claims in.
type poolState struct {
	pool     lanpool.Pool
	claim    lanpool.Claim
	settleAt time.Time
	note     string
}

func (ps *poolState) view(now time.Time) ChunkView {
	v := ChunkView{Network: ps.pool.Network, Range: ps.pool.Start.String() + "-" + ps.pool.End.String(), Size: ps.pool.Size, Note: ps.note}
	if ps.claim.Valid {
		f, l := ps.pool.Chunk(ps.claim.Index)
		v.First, v.Last = f.String(), l.String()
		v.Ready = !now.Before(ps.settleAt)
		if !v.Ready && v.Note == "" {
			v.Note = fmt.Sprintf("claiming %s-%s: not handed out before %s, in case another host claimed it at the same moment", f, l, ps.settleAt.Format(time.RFC3339Nano))
		}
	} else if v.Note == "" {
		v.Note = "no chunk claimed yet"
	}
	return v
}

// maxPools bounds the pools one host claims in (gossip.MaxChunkClaims fit
// in the node info).
const maxPools = gossip.MaxChunkClaims

// WantChunk makes the agent claim a chunk of p (if it does not already)
// and returns where that stands. Safe from any goroutine; the claim itself
// is made by the control loop, which this wakes.
func (a *Agent) WantChunk(p lanpool.Pool) (ChunkView, error) {
	if err := p.Validate(); err != nil {
		return ChunkView{}, err
	}
	a.chunkMu.Lock()
	ps, ok := a.pools[p.ID()]
	if !ok {
		for _, o := range a.pools {
			if o.pool.Network == p.Network {
				a.chunkMu.Unlock()
				return ChunkView{}, fmt.Errorf("network %s already claims in range %v-%v (chunk size %d); every host's config must give the same range", p.Network, o.pool.Start, o.pool.End, o.pool.Size)
			}
		}
		if len(a.pools) >= maxPools {
			a.chunkMu.Unlock()
			return ChunkView{}, fmt.Errorf("this host already claims in %d ranges, at most %d", len(a.pools), maxPools)
		}
		ps = &poolState{pool: p}
		a.pools[p.ID()] = ps
		a.log.Info("claiming a chunk of a LAN range", "pool", p.String())
	}
	v := ps.view(a.clock.Now())
	a.chunkMu.Unlock()
	if !v.Ready {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	return v, nil
}

// ChunkViews lists every pool's state, sorted by network.
func (a *Agent) ChunkViews() []ChunkView {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	now := a.clock.Now()
	out := make([]ChunkView, 0, len(a.pools))
	for _, ps := range a.pools {
		out = append(out, ps.view(now))
	}
	slices.SortFunc(out, func(x, y ChunkView) int { return cmp.Compare(x.Network, y.Network) })
	return out
}

// restoreChunks loads the persisted claims (New).
func (a *Agent) restoreChunks() error {
	if a.cfg.Chunks == nil {
		return nil
	}
	held, err := a.cfg.Chunks.Load()
	if err != nil {
		return err
	}
	for _, h := range held {
		if h.Pool.Validate() != nil || len(a.pools) >= maxPools {
			continue
		}
		c := h.Claim
		c.Node, c.Live = a.cfg.Name, true
		if c.Index < 0 || c.Index >= h.Pool.Len() {
			c = lanpool.Claim{}
		}
		a.pools[h.Pool.ID()] = &poolState{pool: h.Pool, claim: c}
		if c.Valid {
			first, last := h.Pool.Chunk(c.Index)
			a.log.Info("chunk restored", "pool", h.Pool.String(), "first", first, "last", last)
		}
	}
	return nil
}

// saveChunksLocked persists every pool and claim (chunkMu held).
func (a *Agent) saveChunksLocked() {
	if a.cfg.Chunks == nil {
		return
	}
	held := make([]lanpool.Held, 0, len(a.pools))
	for _, ps := range a.pools {
		held = append(held, lanpool.Held{Pool: ps.pool, Claim: ps.claim})
	}
	slices.SortFunc(held, func(x, y lanpool.Held) int { return cmp.Compare(x.Pool.Network, y.Pool.Network) })
	if err := a.cfg.Chunks.Save(held); err != nil {
		a.log.Error("persist chunk claims", "err", err)
	}
}

// chunkClaims are the published claims (Info).
func (a *Agent) chunkClaims() []gossip.ChunkClaim {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	var out []gossip.ChunkClaim
	for id, ps := range a.pools {
		if ps.claim.Valid {
			out = append(out, gossip.ChunkClaim{Pool: id, Index: uint16(ps.claim.Index), Since: ps.claim.Since})
		}
	}
	slices.SortFunc(out, func(x, y gossip.ChunkClaim) int { return cmp.Compare(x.Pool, y.Pool) })
	return out
}

// stepChunks decides this host's claim in every pool from the members'
// claims (step). It reports whether the published claims changed and
// whether a fresh claim is still settling (timed work).
func (a *Agent) stepChunks(members []gossip.Member, believed map[string]*checked, now time.Time) (changed, settling bool) {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	if len(a.pools) == 0 {
		return false, false
	}
	others := map[uint64][]lanpool.Claim{}
	for _, m := range members {
		c := believed[m.Name]
		if m.Name == a.cfg.Name || m.InfoErr != nil || m.State == gossip.Left || c == nil || c.refusedAll != "" {
			continue
		}
		live := m.State == gossip.Alive || m.State == gossip.Suspect
		claimed := map[uint64]bool{}
		for _, cc := range m.Info.Chunks {
			ps := a.pools[cc.Pool]
			if ps == nil {
				continue // a pool this host does not claim in
			}
			if claimed[cc.Pool] {
				// One chunk per host and range: a member publishing more
				// (a hostile or broken one) gets its first believed only.
				a.log.Warn("chunk claim refused", "peer", m.Name, "pool", ps.pool.String(), "index", cc.Index, "err", "a second claim in the range")
				continue
			}
			claimed[cc.Pool] = true
			if why := sinceReason(cc.Since, now); why != "" || int(cc.Index) >= ps.pool.Len() {
				a.log.Warn("chunk claim refused", "peer", m.Name, "pool", ps.pool.String(), "index", cc.Index, "err", cmp.Or(why, "past the last chunk"))
				continue
			}
			others[cc.Pool] = append(others[cc.Pool], lanpool.Claim{Node: m.Name, Index: int(cc.Index), Since: cc.Since, Live: live, Valid: true})
		}
	}
	dirty := false
	for id, ps := range a.pools {
		next, moved, err := lanpool.Decide(a.cfg.Name, ps.pool, ps.claim, others[id], now)
		ps.note = ""
		if err != nil {
			ps.note = err.Error()
			a.log.Error("claim a chunk", "pool", ps.pool.String(), "err", err)
		}
		if moved && next.Valid {
			if why := a.mayClaim(believed); why != "" {
				ps.note = "no chunk: " + why
				a.log.Info("no chunk claimed", "pool", ps.pool.String(), "reason", why)
				next, moved = lanpool.Claim{}, ps.claim.Valid
			}
		}
		if moved {
			switch {
			case ps.claim.Valid && next.Valid:
				a.log.Warn("chunk lost to an earlier claim; moving", "pool", ps.pool.String(), "index", ps.claim.Index, "new", next.Index)
			case ps.claim.Valid:
				a.log.Error("chunk lost and no other claimed", "pool", ps.pool.String(), "index", ps.claim.Index)
			default:
				first, last := ps.pool.Chunk(next.Index)
				a.log.Info("chunk claimed", "pool", ps.pool.String(), "first", first, "last", last, "handed_out_from", now.Add(a.cfg.ClaimSettle).Format(time.RFC3339Nano))
			}
			ps.claim = next
			if next.Valid {
				ps.settleAt = now.Add(a.cfg.ClaimSettle)
			}
			dirty = true
		}
		if ps.claim.Valid && now.Before(ps.settleAt) {
			settling = true
		}
	}
	if dirty {
		a.saveChunksLocked()
	}
	return dirty, settling
}

// sinceReason says why a claim's Since is implausible ("" if it is not):
// the rule blockReason applies to block claims.
func sinceReason(since int64, now time.Time) string {
	switch {
	case since < minSince:
		return fmt.Sprintf("implausible since %d (before %s)", since, time.Unix(0, minSince).UTC().Format("2006-01-02"))
	case since > now.Add(maxFutureSince).UnixNano():
		return fmt.Sprintf("implausible since %s: in the future", time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	return ""
}

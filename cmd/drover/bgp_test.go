//go:build !nobgp

package main

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
)

// recLocal is the agent's Router, recording the local prefixes.
type recLocal struct{ local []netip.Prefix }

func (r *recLocal) SetPeers([]*router.Peer) error { return nil }
func (r *recLocal) SetLocal(p []netip.Prefix, _ []netip.Addr) error {
	r.local = p
	return nil
}

// TestAnnouncingRouter: what the agent sets as local prefixes is what the
// speaker announces; a block given up is withdrawn.
func TestAnnouncingRouter(t *testing.T) {
	cfg := &config.Config{Node: config.Node{UnderlayAddr: netip.MustParseAddr("127.0.0.1")}, BGP: &config.BGP{
		AS: 64601, RouterIDAddr: netip.MustParseAddr("192.0.2.1"), RestartTime: 10 * time.Second,
		// Nobody listens there: announcing needs no session.
		Neighbors: []config.BGPNeighbor{{AddressAddr: netip.MustParseAddr("127.0.0.1"), AS: 64600, Port: 1}},
	}}
	bs, err := startBGP(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.sp.Close(false)
	inner := &recLocal{}
	r := announcingRouter{Router: inner, b: bs}
	a, b := netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("10.42.9.0/24")
	for _, step := range []struct{ set, want []netip.Prefix }{
		{[]netip.Prefix{a}, []netip.Prefix{a}},
		{[]netip.Prefix{b}, []netip.Prefix{b}}, // the block moved
		{nil, []netip.Prefix{}},                // given up
	} {
		if err := r.SetLocal(step.set, nil); err != nil {
			t.Fatal(err)
		}
		if got := bs.sp.Announced(); !slices.Equal(got, step.want) {
			t.Errorf("after SetLocal(%v): announced %v, want %v", step.set, got, step.want)
		}
		if !slices.Equal(inner.local, step.set) {
			t.Errorf("router's local prefixes %v, want %v", inner.local, step.set)
		}
	}
}

package main

import (
	"net/netip"

	"github.com/drovernet/drover/agent"
)

// announcingRouter is the agent's Router that also announces the local
// prefixes by BGP whenever the agent sets them (a block claimed, moved or
// given up).
type announcingRouter struct {
	agent.Router
	b *bgpSpeaker
}

func (r announcingRouter) SetLocal(prefixes []netip.Prefix, addrs []netip.Addr) error {
	if err := r.Router.SetLocal(prefixes, addrs); err != nil {
		return err
	}
	r.b.announce(prefixes)
	return nil
}

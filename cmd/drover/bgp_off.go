//go:build nobgp

package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
)

// A build with -tags nobgp leaves GoBGP out (about 12 MB of a stripped
// amd64 binary, for edge boards that announce nothing by BGP).

const withBGP = false

type bgpSpeaker struct{}

func startBGP(cfg *config.Config, _ *slog.Logger) (*bgpSpeaker, error) {
	if cfg.BGP != nil {
		return nil, errors.New("bgp: this drover was built without BGP support (-tags nobgp)")
	}
	return nil, nil
}

func (b *bgpSpeaker) announce([]netip.Prefix)              {}
func (b *bgpSpeaker) fabric(string) agent.Fabric           { return nil }
func (b *bgpSpeaker) follow(context.Context, *agent.Agent) {}
func (b *bgpSpeaker) stop()                                {}
func (b *bgpSpeaker) fill(*router.Status)                  {}

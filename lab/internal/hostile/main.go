// Command hostile is a test tool: cluster members that hold the cluster key
// but publish whatever they are told — blocks outside the cluster CIDR,
// default routes, other hosts' addresses, implausible claim times. It runs
// the real gossip package, so the daemons under test see what a member with
// a bad or hostile configuration would publish (issue 9; testenv's
// TestClusterHostileClaims). It is never part of the drover binary.
//
//	hostile -spec FILE
//
// The spec is JSON (see spec). It prints "ready" once every member has
// joined, and leaves the cluster and exits on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/gossip"
)

type spec struct {
	KeyFile  string   `json:"key_file"`
	Join     []string `json:"join"`
	Bind     string   `json:"bind"`     // underlay address to bind gossip to
	Underlay string   `json:"underlay"` // published data-plane address:port
	Fast     bool     `json:"fast"`
	Members  []member `json:"members"`
}

type member struct {
	Name     string   `json:"name"`
	Port     int      `json:"port"`
	Block    string   `json:"block"`
	Since    int64    `json:"since"`
	Prefixes []string `json:"prefixes"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 3 || os.Args[1] != "-spec" {
		return fmt.Errorf("usage: hostile -spec FILE")
	}
	b, err := os.ReadFile(os.Args[2])
	if err != nil {
		return err
	}
	var s spec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	key, err := gossip.LoadKey(s.KeyFile)
	if err != nil {
		return err
	}
	bind, err := netip.ParseAddr(s.Bind)
	if err != nil {
		return err
	}
	ul, err := netip.ParseAddrPort(s.Underlay)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var cls []*gossip.Cluster
	for _, m := range s.Members {
		id, err := pairkey.NewKeyPair(rand.Reader)
		if err != nil {
			return err
		}
		eph, err := pairkey.NewKeyPair(rand.Reader)
		if err != nil {
			return err
		}
		in := gossip.NodeInfo{
			Version: "hostile", Underlay: ul, Identity: id.Public, Ephemeral: eph.Public, Epoch: 1,
			Encaps: gossip.EncapESP | gossip.EncapVXLAN, Ciphers: 0xff,
		}
		if m.Block != "" {
			if in.Block, err = netip.ParsePrefix(m.Block); err != nil {
				return err
			}
			in.BlockSince = m.Since
		}
		for _, p := range m.Prefixes {
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return err
			}
			in.Prefixes = append(in.Prefixes, pfx)
		}
		gc := gossip.Config{Name: m.Name, BindAddr: bind, BindPort: m.Port, Key: key, Log: log.With("member", m.Name)}
		if s.Fast {
			gc = gossip.FastTiming(gc)
		}
		cl, err := gossip.Start(gc, in)
		if err != nil {
			return fmt.Errorf("member %s: %w", m.Name, err)
		}
		cls = append(cls, cl)
		if _, err := cl.Join(s.Join); err != nil {
			return fmt.Errorf("member %s: join: %w", m.Name, err)
		}
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	for _, cl := range cls {
		_ = cl.Leave(2 * time.Second)
		_ = cl.Shutdown()
	}
	return nil
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// cutTable is the nftables table Partition installs in host namespaces.
const cutTable = "drv_cut"

// Partition cuts the underlay between sides: each host of a side drops
// every packet to or from the underlay address of a host on another side
// (in its own namespace, inet table drv_cut, before anything else sees
// them), as a failed link between two switches would. Hosts on one side
// still reach each other. heal removes the cut; it is also registered to
// run when the lab closes.
func (l *Lab) Partition(sides ...[]*Host) (heal func() error, err error) {
	var cut []*Host
	healAll := func() error {
		var errs []error
		for _, h := range cut {
			out, err := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "delete", "table", "inet", cutTable).CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") {
				errs = append(errs, fmt.Errorf("host %s: heal: %v: %s", h.Name, err, out))
			}
		}
		cut = nil
		return errors.Join(errs...)
	}
	for i, side := range sides {
		var others []string
		for j, o := range sides {
			if j == i {
				continue
			}
			for _, g := range o {
				others = append(others, g.Underlay.String())
			}
		}
		if len(others) == 0 {
			continue
		}
		for _, h := range side {
			fam := "ip"
			if h.Underlay.Is6() {
				fam = "ip6"
			}
			set := strings.Join(others, ", ")
			rules := fmt.Sprintf(`table inet %[1]s {
	chain in { type filter hook prerouting priority -310; %[2]s saddr { %[3]s } drop; }
	chain out { type filter hook output priority -310; %[2]s daddr { %[3]s } drop; }
}
`, cutTable, fam, set)
			cmd := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(rules)
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, errors.Join(fmt.Errorf("host %s: cut: %v: %s", h.Name, err, out), healAll())
			}
			cut = append(cut, h)
		}
	}
	l.undo.push("heal the partition", healAll)
	return healAll, nil
}

// Launch starts h's router with the given hosts as its seeds (none: it
// founds a cluster only if it may, cluster.bootstrap) and waits for its
// control socket only: not for a block, which a host that reaches too few
// of the cluster does not claim. AddressHost addresses its containers
// once it has one.
func (l *Lab) Launch(ctx context.Context, h *Host, seeds ...*Host) error {
	var s []string
	for _, g := range seeds {
		s = append(s, l.seedAddr(g))
	}
	return l.launch(ctx, h, s)
}

// AddressHost gives h's bridge and containers addresses from the block its
// router holds (the first time; later it checks the block is the same,
// ErrBlockChanged).
func (l *Lab) AddressHost(h *Host) error { return l.checkBlock(h) }

// ControlSocket is the path of h's router's control socket (also before
// its router first starts).
func (h *Host) ControlSocket() string { return h.cfg.ControlSocket }

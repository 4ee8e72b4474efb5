package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// LabThroughputTime is how long Run measures throughput.
const LabThroughputTime = 3 * time.Second

// Run is `drover lab`: it removes what a crashed earlier lab with the same
// tag left behind, builds a lab, waits for the routers, prints the topology,
// the reachability matrix, a throughput figure and each router's drop
// counters to w, and removes the lab again — also when ctx ends (Ctrl-C) or a
// step fails. It returns an error when any pair of containers is unreachable.
func Run(ctx context.Context, opts Options, w io.Writer) (err error) {
	opts.Default()
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("lab options: %w", err)
	}
	if gone := Sweep(opts.Tag + "-"); len(gone) > 0 {
		fmt.Fprintf(w, "removed %d namespaces left by an earlier lab: %s\n", len(gone), strings.Join(gone, " "))
	}
	cipher := ""
	if opts.Encapsulation == "esp" {
		cipher = " " + opts.Cipher
	}
	mode := ""
	if opts.Cluster {
		mode = ", cluster mode (gossip; each host claims its block)"
	}
	fmt.Fprintf(w, "drover lab: %d hosts × %d containers, %s%s, underlay %s MTU %d%s\n",
		opts.Hosts, opts.Containers, opts.Encapsulation, cipher, underlayPrefix(opts.UnderlayIPv6), opts.UnderlayMTU, mode)

	start := time.Now()
	lab, err := NewLab(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		t := time.Now()
		cerr := lab.Close()
		if cerr != nil {
			fmt.Fprintf(w, "removing the lab: %v\n", cerr)
			err = errors.Join(err, fmt.Errorf("removing the lab: %w", cerr))
			return
		}
		fmt.Fprintf(w, "lab removed in %v\n", time.Since(t).Round(time.Millisecond))
	}()
	defer func() {
		if ctx.Err() != nil {
			fmt.Fprintln(w, "interrupted: removing the lab")
		}
	}()

	if err := lab.WaitRouters(ctx); err != nil {
		return err
	}
	fmt.Fprintf(w, "lab up in %v (routers run `%s run` in each host namespace)\n", time.Since(start).Round(time.Millisecond), lab.Options().Bin)
	fmt.Fprint(w, lab.Topology())
	if opts.Cluster {
		after := lab.ConvergedAt.Sub(lab.lastStart()).Round(time.Millisecond)
		if len(lab.Hosts) > summaryHosts {
			// A view per host lists every member: 100 lines of 100.
			fmt.Fprintf(w, "\ncluster converged %v after the last router started (%v after the first): %s\n",
				after, lab.ConvergedAt.Sub(lab.firstStart()).Round(time.Millisecond), lab.BlocksSummary())
		} else {
			fmt.Fprintf(w, "\ncluster converged %v after the last router started; views:\n%s", after, lab.ClusterViews())
		}
	}

	var failed []error
	if err := lab.reachability(ctx, w, &failed); err != nil {
		return err
	}

	if from, to, ok := lab.throughputPair(); ok {
		fmt.Fprintf(w, "\nthroughput (one TCP stream, %v):\n", LabThroughputTime)
		res, err := lab.Throughput(ctx, from, to, LabThroughputTime)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			fmt.Fprintf(w, "%s → %s: %v\n", from, to, err)
			failed = append(failed, fmt.Errorf("lab: throughput: %w", err))
		} else {
			fmt.Fprintf(w, "%s\n", res)
		}
	}

	if opts.Idle > 0 {
		fmt.Fprintf(w, "\nidle measurement (%v; gossip counted by nftables on each host's cluster port, IP bytes):\n", opts.Idle)
		rep, err := lab.MeasureIdle(ctx, opts.Idle)
		if err != nil {
			return err
		}
		fmt.Fprint(w, rep)
		if dead, members := rep.Dead(); dead > 0 {
			failed = append(failed, fmt.Errorf("lab: %d \"member dead\" lines while idle, about %d members: false positives", dead, len(members)))
		}
	}

	fmt.Fprintf(w, "\nrouters:\n")
	if len(lab.Hosts) > summaryHosts {
		fmt.Fprint(w, lab.CountersSummary())
	} else {
		fmt.Fprint(w, lab.Counters())
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nrouter logs (last lines):\n")
		for _, h := range lab.Hosts {
			fmt.Fprintf(w, "--- %s (%s)\n%s\n", h.Name, h.NS.Name, h.Router.LogTail(15))
		}
	}
	return errors.Join(failed...)
}

// reachability prints the full matrix, or a sample in a large lab
// (Options.Sample), and adds a failure for unreachable pairs.
func (l *Lab) reachability(ctx context.Context, w io.Writer, failed *[]error) error {
	k := l.opts.Sample
	if k == 0 && len(l.Containers()) > FullMatrixContainers {
		k = DefaultSample
	}
	t := time.Now()
	if k == 0 {
		fmt.Fprintf(w, "\nreachability (ICMP echo from row to column):\n")
		m, err := l.Reachability(ctx)
		if err != nil {
			return err
		}
		fmt.Fprint(w, m)
		fmt.Fprintf(w, "(probed in %v)\n", time.Since(t).Round(time.Millisecond))
		if !m.OK() {
			ok, total := m.Count()
			*failed = append(*failed, fmt.Errorf("lab: %d of %d container pairs unreachable", total-ok, total))
		}
		return nil
	}
	seed := uint64(time.Now().UnixNano())
	fmt.Fprintf(w, "\nreachability (ICMP echo from each container to the next and to %d others at random, seed %d):\n", k, seed)
	s, err := l.ReachabilitySample(ctx, k, seed)
	if err != nil {
		return err
	}
	fmt.Fprint(w, s)
	fmt.Fprintf(w, "(probed in %v)\n", time.Since(t).Round(time.Millisecond))
	if !s.OK() {
		ok, total := s.Count()
		*failed = append(*failed, fmt.Errorf("lab: %d of %d sampled container pairs unreachable", total-ok, total))
	}
	return nil
}

// WaitRouters waits until every running router answers on its control
// socket and knows all the other running routers as peers.
func (l *Lab) WaitRouters(ctx context.Context) error {
	running := l.Running()
	for _, h := range running {
		err := Poll(ctx, 10*time.Second, 50*time.Millisecond, func() error {
			select {
			case <-h.Router.Done():
				return fmt.Errorf("router exited: %v\n%s", h.Router.ExitErr(), h.Router.LogTail(15))
			default:
			}
			st, err := h.Router.Status()
			if err != nil {
				return err
			}
			if len(st.Peers) != len(running)-1 {
				return fmt.Errorf("%d peers, want %d", len(st.Peers), len(running)-1)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("router %s: %w", h.Name, ctxOr(ctx, err))
		}
	}
	return nil
}

// throughputPair picks the first container of host 1 and of host 2, or the
// first two containers of a single host.
func (l *Lab) throughputPair() (from, to ContainerRef, ok bool) {
	from = ContainerRef{1, 1}
	switch {
	case len(l.Hosts) >= 2:
		return from, ContainerRef{2, 1}, true
	case len(l.Hosts[0].Containers) >= 2:
		return from, ContainerRef{1, 2}, true
	}
	return from, from, false
}

// Topology describes the lab, a line per host.
func (l *Lab) Topology() string {
	var b strings.Builder
	for _, h := range l.Hosts {
		tun := ""
		if h.Router != nil {
			if st, err := h.Router.Status(); err == nil {
				tun = fmt.Sprintf("  tun %s MTU %d", st.TUN, st.TUNMTU)
			}
		}
		var ctrs []string
		for _, c := range h.Containers {
			if c.Addr.IsValid() {
				ctrs = append(ctrs, fmt.Sprintf("%s %s", c.Ref, c.Addr))
			} else {
				ctrs = append(ctrs, c.Ref.String())
			}
		}
		prefix := h.Prefix.String()
		if !h.Prefix.IsValid() {
			prefix = "(no block yet)"
		}
		fmt.Fprintf(&b, "  %s  netns %s  underlay %s%s\n      containers %s (MTU %d): %s\n",
			h.Name, h.NS.Name, h.Underlay, tun, prefix, l.ContainerMTU, strings.Join(ctrs, ", "))
	}
	return b.String()
}

// summaryHosts is the largest lab Run describes host by host (views,
// counters); larger ones get one line.
const summaryHosts = 20

// BlocksSummary says how many hosts have a block, and whether the blocks
// are distinct (Converged checked they are, with every router's view).
func (l *Lab) BlocksSummary() string {
	seen := map[netip.Prefix]bool{}
	n := 0
	for _, h := range l.Hosts {
		if h.Prefix.IsValid() {
			n++
			seen[h.Prefix] = true
		}
	}
	return fmt.Sprintf("%d hosts, %d distinct blocks, every router lists every other alive with its block and routes to it", n, len(seen))
}

// CountersSummary sums the routers' traffic and drop counters, one line.
func (l *Lab) CountersSummary() string {
	var tx, rx, txb, rxb uint64
	drops := map[string]uint64{}
	n := 0
	var errs []string
	for _, h := range l.Hosts {
		if h.Router == nil {
			continue
		}
		st, err := h.Router.Status()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", h.Name, err))
			continue
		}
		n++
		tx, txb, rx, rxb = tx+st.TxPackets, txb+st.TxBytes, rx+st.RxPackets, rxb+st.RxBytes
		for k, v := range st.Drops {
			drops[k] += v
		}
	}
	var ds []string
	for _, k := range slices.Sorted(maps.Keys(drops)) {
		if drops[k] != 0 {
			ds = append(ds, fmt.Sprintf("%s=%d", k, drops[k]))
		}
	}
	if len(ds) == 0 {
		ds = []string{"none"}
	}
	out := fmt.Sprintf("  %d routers: tx %d packets (%d bytes)  rx %d packets (%d bytes)  drops: %s\n", n, tx, txb, rx, rxb, strings.Join(ds, " "))
	for _, e := range errs {
		out += "  status " + e + "\n"
	}
	return out
}

// Counters summarises each router's traffic and its non-zero drop counters,
// a line per host.
func (l *Lab) Counters() string {
	var b strings.Builder
	for _, h := range l.Hosts {
		if h.Router == nil {
			continue
		}
		st, err := h.Router.Status()
		if err != nil {
			fmt.Fprintf(&b, "  %s  status: %v\n", h.Name, err)
			continue
		}
		var drops []string
		for _, k := range slices.Sorted(maps.Keys(st.Drops)) {
			if st.Drops[k] != 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", k, st.Drops[k]))
			}
		}
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		fmt.Fprintf(&b, "  %s  tx %d packets (%d bytes)  rx %d packets (%d bytes)  drops: %s\n",
			h.Name, st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes, strings.Join(drops, " "))
	}
	return b.String()
}

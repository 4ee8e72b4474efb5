package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/procstat"
)

// gossipTable is the nftables table the idle measurement adds to each host
// namespace to count the gossip port's traffic; it goes with the namespace.
const gossipTable = "drv_gossip"

// Counts is packets and bytes (whole IP packets, headers included).
type Counts struct{ Packets, Bytes uint64 }

func (c Counts) sub(d Counts) Counts { return Counts{c.Packets - d.Packets, c.Bytes - d.Bytes} }

// HostIdle is one host over an idle period.
type HostIdle struct {
	Name string
	// GossipIn and GossipOut are the host's gossip traffic (the cluster
	// port, TCP and UDP, either end) over the period.
	GossipIn, GossipOut Counts
	// CPU is the router process's CPU over the period, as a fraction of
	// one core; RSS its resident memory at the end, in bytes.
	CPU float64
	RSS int64
	// Dead and Suspect count the router's "member dead" and "member
	// suspect" log lines in the period; DeadPeers names the members it
	// declared dead.
	Dead, Suspect int
	DeadPeers     []string
}

// IdleReport is MeasureIdle's result.
type IdleReport struct {
	Duration time.Duration // measured wall time
	Hosts    []HostIdle
}

// Stat is the minimum, median and maximum of a value across hosts.
type Stat struct{ Min, Median, Max float64 }

// Summarize returns the minimum, median (the mean of the two middle values
// for an even count) and maximum of v; zero for none.
func Summarize(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Stat{Min: s[0], Median: med, Max: s[n-1]}
}

// per returns f of every host.
func (r IdleReport) per(f func(h HostIdle) float64) []float64 {
	out := make([]float64, len(r.Hosts))
	for i, h := range r.Hosts {
		out[i] = f(h)
	}
	return out
}

// Dead is the number of "member dead" lines of all hosts, and the members
// they named.
func (r IdleReport) Dead() (lines int, members []string) {
	for _, h := range r.Hosts {
		lines += h.Dead
		for _, p := range h.DeadPeers {
			if !slices.Contains(members, p) {
				members = append(members, p)
			}
		}
	}
	slices.Sort(members)
	return lines, members
}

// String renders the summary across hosts: gossip bytes and packets per
// second in and out, CPU, RSS, and the member events.
func (r IdleReport) String() string {
	var b strings.Builder
	secs := r.Duration.Seconds()
	if secs <= 0 {
		secs = 1
	}
	rate := func(c func(HostIdle) Counts, bytes bool) func(HostIdle) float64 {
		return func(h HostIdle) float64 {
			if bytes {
				return float64(c(h).Bytes) / secs
			}
			return float64(c(h).Packets) / secs
		}
	}
	in := func(h HostIdle) Counts { return h.GossipIn }
	out := func(h HostIdle) Counts { return h.GossipOut }
	fmt.Fprintf(&b, "idle %v, %d hosts (min / median / max per host):\n", r.Duration.Round(time.Second), len(r.Hosts))
	for _, row := range []struct {
		name, unit string
		f          func(HostIdle) float64
		prec       int
	}{
		{"gossip in", "bytes/s", rate(in, true), 0},
		{"gossip out", "bytes/s", rate(out, true), 0},
		{"gossip in", "packets/s", rate(in, false), 1},
		{"gossip out", "packets/s", rate(out, false), 1},
		{"CPU", "% of a core", func(h HostIdle) float64 { return 100 * h.CPU }, 2},
		{"RSS", "MiB", func(h HostIdle) float64 { return float64(h.RSS) / (1 << 20) }, 1},
	} {
		s := Summarize(r.per(row.f))
		fmt.Fprintf(&b, "  %-10s %-12s %10.*f %10.*f %10.*f\n", row.name, row.unit, row.prec, s.Min, row.prec, s.Median, row.prec, s.Max)
	}
	dead, members := r.Dead()
	suspect := 0
	for _, h := range r.Hosts {
		suspect += h.Suspect
	}
	fmt.Fprintf(&b, "  \"member dead\" lines: %d", dead)
	if len(members) > 0 {
		fmt.Fprintf(&b, " (about %s)", strings.Join(members, " "))
	}
	fmt.Fprintf(&b, "; \"member suspect\" lines: %d\n", suspect)
	return b.String()
}

// idleStart is what MeasureIdle reads at the start of the period.
type idleStart struct {
	in, out Counts
	proc    procstat.Sample
	logOff  int64
}

// MeasureIdle watches the running routers for d while nothing else happens
// and reports, per host: the gossip traffic on the cluster port (counted
// by an nftables table it adds to each host namespace, in both directions,
// TCP and UDP), the router's CPU (from /proc/PID/stat) and RSS, and the
// "member dead" and "member suspect" lines its log gained. Every router
// must stay up; the error otherwise names the first that exited.
func (l *Lab) MeasureIdle(ctx context.Context, d time.Duration) (IdleReport, error) {
	if !l.opts.Cluster {
		return IdleReport{}, errors.New("idle measurement: needs a cluster-mode lab (gossip)")
	}
	hosts := l.Running()
	if len(hosts) == 0 {
		return IdleReport{}, errors.New("idle measurement: no router runs")
	}
	starts := make([]idleStart, len(hosts))
	for i, h := range hosts {
		if err := addGossipCounters(h.NS, h.cfg.Cluster.Port); err != nil {
			return IdleReport{}, fmt.Errorf("host %s: gossip counters: %w", h.Name, err)
		}
		fi, err := os.Stat(h.logPath())
		if err != nil {
			return IdleReport{}, err
		}
		starts[i].logOff = fi.Size()
	}
	// Counters and CPU are read back to back per host, so each host's
	// period is the same for both.
	begin := time.Now()
	for i, h := range hosts {
		var err error
		if starts[i].in, starts[i].out, err = readGossipCounters(h.NS); err != nil {
			return IdleReport{}, fmt.Errorf("host %s: %w", h.Name, err)
		}
		if starts[i].proc, err = procstat.Read(h.Router.PID()); err != nil {
			return IdleReport{}, fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	l.log.Info("idle measurement started", "hosts", len(hosts), "for", d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return IdleReport{}, ctx.Err()
		case <-end.C:
			waiting = false
		case <-tick.C:
			for _, h := range hosts {
				select {
				case <-h.Router.Done():
					return IdleReport{}, fmt.Errorf("host %s: router exited during the idle period: %v", h.Name, h.Router.ExitErr())
				default:
				}
			}
		}
	}
	rep := IdleReport{Duration: time.Since(begin), Hosts: make([]HostIdle, len(hosts))}
	for i, h := range hosts {
		in, out, err := readGossipCounters(h.NS)
		if err != nil {
			return IdleReport{}, fmt.Errorf("host %s: %w", h.Name, err)
		}
		p, err := procstat.Read(h.Router.PID())
		if err != nil {
			return IdleReport{}, fmt.Errorf("host %s: %w", h.Name, err)
		}
		hi := HostIdle{Name: h.Name, GossipIn: in.sub(starts[i].in), GossipOut: out.sub(starts[i].out),
			CPU: procstat.CPUShare(starts[i].proc, p), RSS: p.RSS}
		f, err := os.Open(h.logPath())
		if err != nil {
			return IdleReport{}, err
		}
		_, err = f.Seek(starts[i].logOff, io.SeekStart)
		if err == nil {
			hi.Dead, hi.Suspect, hi.DeadPeers, err = countMemberEvents(f)
		}
		f.Close()
		if err != nil {
			return IdleReport{}, fmt.Errorf("host %s: log: %w", h.Name, err)
		}
		rep.Hosts[i] = hi
	}
	return rep, nil
}

// logPath is the current router log of h.
func (h *Host) logPath() string { return filepath.Join(h.Router.Dir, h.Router.Name+".log") }

// countMemberEvents counts the router log lines (slog text) that declare a
// member dead or suspect, and names the members declared dead.
func countMemberEvents(r io.Reader) (dead, suspect int, deadPeers []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, ` msg="member dead"`):
			dead++
			if _, rest, ok := strings.Cut(line, " peer="); ok {
				p, _, _ := strings.Cut(rest, " ")
				if !slices.Contains(deadPeers, p) {
					deadPeers = append(deadPeers, p)
				}
			}
		case strings.Contains(line, ` msg="member suspect"`):
			suspect++
		}
	}
	return dead, suspect, deadPeers, sc.Err()
}

// Chains of gossipTable: traffic into and out of the host.
const (
	gossipIn  = "in"
	gossipOut = "out"
)

// addGossipCounters adds gossipTable to ns: in its input and output
// chains, one counting rule per protocol (TCP, UDP) and end (destination
// port, source port) of the gossip port. Each rule accepts what it counted,
// so a datagram from port to port (memberlist's UDP) is counted once; an
// accept ends only this table's chain, and filters nothing.
func addGossipCounters(ns *NetNS, port uint16) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: gossipTable})
	for _, ch := range []struct {
		name string
		hook *nftables.ChainHook
	}{{gossipIn, nftables.ChainHookInput}, {gossipOut, nftables.ChainHookOutput}} {
		chain := c.AddChain(&nftables.Chain{Name: ch.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: ch.hook, Priority: nftables.ChainPriorityFilter})
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			for _, off := range []uint32{2, 0} { // destination port, then source port
				p := binary.BigEndian.AppendUint16(nil, port)
				c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
					&expr.Counter{},
					&expr.Verdict{Kind: expr.VerdictAccept},
				}})
			}
		}
	}
	return c.Flush()
}

// readGossipCounters sums the counters of gossipTable's chains in ns.
func readGossipCounters(ns *NetNS) (in, out Counts, err error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		return in, out, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: gossipTable}
	for _, ch := range []struct {
		name string
		sum  *Counts
	}{{gossipIn, &in}, {gossipOut, &out}} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: ch.name, Table: t})
		if err != nil {
			return in, out, fmt.Errorf("nftables %s %s: %w", gossipTable, ch.name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					ch.sum.Packets += ctr.Packets
					ch.sum.Bytes += ctr.Bytes
				}
			}
		}
	}
	return in, out, nil
}

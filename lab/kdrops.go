package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// KernelDrops reports, for every namespace of the lab, the kernel's own
// loss counters: UDP's (InErrors, RcvbufErrors, SndbufErrors, NoPorts from
// /proc/net/snmp) and each interface's rx/tx dropped. A test that saw a
// datagram vanish logs it to tell a kernel drop from one of drover's (those
// are in the router's status). Only non-zero counters are listed.
func (l *Lab) KernelDrops() string {
	var nss []*NetNS
	if l.Underlay != nil {
		nss = append(nss, l.Underlay)
	}
	for _, h := range l.Hosts {
		nss = append(nss, h.NS)
		for _, c := range h.Containers {
			nss = append(nss, c.NS)
		}
	}
	var b strings.Builder
	for _, ns := range nss {
		if ns == nil {
			continue
		}
		fmt.Fprintf(&b, "  %s: %s\n", ns.Name, nsDrops(ns))
	}
	return b.String()
}

func nsDrops(ns *NetNS) string {
	var parts []string
	err := ns.Do(func() error {
		// /proc/thread-self: the namespace of this (locked) thread, not
		// of the process.
		snmp, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		parts = append(parts, udpCounters(string(snmp), "InErrors", "RcvbufErrors", "SndbufErrors", "NoPorts")...)
		return nil
	})
	if err != nil {
		return err.Error()
	}
	err = withNetlink(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			s := l.Attrs().Statistics
			if s == nil {
				continue
			}
			if s.RxDropped != 0 || s.TxDropped != 0 {
				parts = append(parts, fmt.Sprintf("%s rx_dropped=%d tx_dropped=%d", l.Attrs().Name, s.RxDropped, s.TxDropped))
			}
		}
		return nil
	})
	if err != nil {
		parts = append(parts, err.Error())
	}
	if len(parts) == 0 {
		return "no drops"
	}
	return strings.Join(parts, ", ")
}

// udpCounters returns "Udp.<name>=<value>" for each named counter of the
// "Udp:" lines of /proc/net/snmp that is not zero.
func udpCounters(snmp string, names ...string) []string {
	var hdr, val []string
	for _, line := range strings.Split(snmp, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if hdr == nil {
			hdr = f[1:]
		} else {
			val = f[1:]
		}
	}
	var out []string
	for i, h := range hdr {
		if i >= len(val) {
			break
		}
		for _, n := range names {
			if h == n {
				if v, err := strconv.ParseUint(val[i], 10, 64); err == nil && v != 0 {
					out = append(out, fmt.Sprintf("Udp.%s=%d", n, v))
				}
			}
		}
	}
	return out
}

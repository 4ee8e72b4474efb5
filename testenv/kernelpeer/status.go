package kernelpeer

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// XfrmSA is one state of `ip -s xfrm state`, as iproute2 6.1 prints it.
type XfrmSA struct {
	Src, Dst netip.Addr
	SPI      uint32
	ESN      bool // "flag ... esn"
	// Bytes and Packets are the lifetime counters ("lifetime current"):
	// what the SA encrypted (outbound) or decrypted and accepted (inbound).
	Bytes, Packets uint64
	// Seq is the highest sequence number received, OSeq the last one sent
	// (anti-replay context; with ESN, seq-hi is the upper 32 bits).
	Seq, OSeq uint64
	// The SA's drop statistics ("stats:"): outside the replay window,
	// duplicates, and ICV failures ("failed", RFC 4303 §3.4.4).
	ReplayWindowDrops, ReplayDrops, IntegrityFailed uint64
}

// ESPStatus is the parsed output of the script's `status`.
type ESPStatus struct {
	Raw string
	SAs []XfrmSA
	// XfrmStat holds the non-zero counters of /proc/net/xfrm_stat
	// (XfrmInNoStates, XfrmInStateProtoError, ...); absent means zero.
	XfrmStat map[string]uint64
}

// SA returns the state with the given SPI.
func (s *ESPStatus) SA(spi uint32) (XfrmSA, bool) {
	for _, sa := range s.SAs {
		if sa.SPI == spi {
			return sa, true
		}
	}
	return XfrmSA{}, false
}

// XfrmInErrors returns the non-zero inbound error counters of xfrm_stat
// (every XfrmIn* counter is an error: there is no success counter).
func (s *ESPStatus) XfrmInErrors() map[string]uint64 {
	m := map[string]uint64{}
	for k, v := range s.XfrmStat {
		if strings.HasPrefix(k, "XfrmIn") && v != 0 {
			m[k] = v
		}
	}
	return m
}

var (
	reSAHead    = regexp.MustCompile(`^src (\S+) dst (\S+)\s*$`)
	reSPI       = regexp.MustCompile(`^\s+proto esp spi (0x[0-9a-f]+)`)
	reFlags     = regexp.MustCompile(`^\s+replay-window \d+ seq 0x[0-9a-f]+ flag (.*)$`)
	reLifetime  = regexp.MustCompile(`^\s*(\d+)\(bytes\), (\d+)\(packets\)\s*$`)
	reSAStats   = regexp.MustCompile(`^\s*replay-window (\d+) replay (\d+) failed (\d+)\s*$`)
	reXfrmStat  = regexp.MustCompile(`^(Xfrm\w+)\s+(\d+)\s*$`)
	reReplayCtx = regexp.MustCompile(`(?:^|[\s,:])(seq-hi|seq|oseq-hi|oseq) 0x([0-9a-f]+)`)
)

// ParseESPStatus parses `ip -s xfrm state`, then the policies (kept in Raw
// only), then the non-zero lines of /proc/net/xfrm_stat.
func ParseESPStatus(raw string) (*ESPStatus, error) {
	st := &ESPStatus{Raw: raw, XfrmStat: map[string]uint64{}}
	var cur *XfrmSA
	var seqHi, oseqHi uint64
	finish := func() {
		if cur != nil {
			cur.Seq |= seqHi << 32
			cur.OSeq |= oseqHi << 32
			st.SAs = append(st.SAs, *cur)
		}
		cur, seqHi, oseqHi = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if m := reSAHead.FindStringSubmatch(line); m != nil {
			finish()
			src, err1 := netip.ParseAddr(m[1])
			dst, err2 := netip.ParseAddr(m[2])
			if err1 == nil && err2 == nil { // policies have prefixes here
				cur = &XfrmSA{Src: src, Dst: dst}
			}
			continue
		}
		if m := reXfrmStat.FindStringSubmatch(line); m != nil {
			finish()
			n, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("xfrm_stat %q: %w", line, err)
			}
			st.XfrmStat[m[1]] = n
			continue
		}
		if line == "" || !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
			finish()
			continue
		}
		if cur == nil {
			continue
		}
		if m := reSPI.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseUint(m[1], 0, 32)
			if err != nil {
				return nil, fmt.Errorf("spi %q: %w", line, err)
			}
			cur.SPI = uint32(v)
		} else if m := reFlags.FindStringSubmatch(line); m != nil {
			cur.ESN = strings.Contains(" "+m[1]+" ", " esn ")
		} else if m := reLifetime.FindStringSubmatch(line); m != nil {
			cur.Bytes, _ = strconv.ParseUint(m[1], 10, 64)
			cur.Packets, _ = strconv.ParseUint(m[2], 10, 64)
		} else if m := reSAStats.FindStringSubmatch(line); m != nil {
			cur.ReplayWindowDrops, _ = strconv.ParseUint(m[1], 10, 64)
			cur.ReplayDrops, _ = strconv.ParseUint(m[2], 10, 64)
			cur.IntegrityFailed, _ = strconv.ParseUint(m[3], 10, 64)
		} else if strings.Contains(line, "oseq ") {
			// "anti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000" or,
			// with ESN, " seq-hi 0x0, seq 0x30, oseq-hi 0x0, oseq 0x0".
			for _, m := range reReplayCtx.FindAllStringSubmatch(line, -1) {
				v, err := strconv.ParseUint(m[2], 16, 64)
				if err != nil {
					return nil, fmt.Errorf("anti-replay context %q: %w", line, err)
				}
				switch m[1] {
				case "seq":
					cur.Seq = v
				case "oseq":
					cur.OSeq = v
				case "seq-hi":
					seqHi = v
				case "oseq-hi":
					oseqHi = v
				}
			}
		}
	}
	finish()
	for i, sa := range st.SAs {
		if sa.SPI == 0 {
			return nil, fmt.Errorf("xfrm state %d (%s → %s): no SPI found", i, sa.Src, sa.Dst)
		}
	}
	return st, sc.Err()
}

// LinkCounters are one direction of `ip -s link`.
type LinkCounters struct {
	Bytes, Packets, Errors, Dropped uint64
}

// Neighbor is one line of `ip neigh show dev vxlan0`.
type Neighbor struct {
	IP    netip.Addr
	MAC   net.HardwareAddr // nil while unresolved (INCOMPLETE, FAILED)
	State string           // PERMANENT, REACHABLE, STALE, DELAY, FAILED, ...
}

// VXLANStatus is the parsed output of kernel-vxlan-peer.sh `status`.
type VXLANStatus struct {
	Raw       string
	RX, TX    LinkCounters // vxlan0's counters: inner frames
	FDB       []string     // `bridge fdb show dev vxlan0` lines
	Neighbors []Neighbor
}

// Neighbor returns the neighbour entry for ip.
func (s *VXLANStatus) Neighbor(ip netip.Addr) (Neighbor, bool) {
	for _, n := range s.Neighbors {
		if n.IP == ip {
			return n, true
		}
	}
	return Neighbor{}, false
}

// ParseVXLANStatus parses `ip -d -s link show vxlan0`, then "--- fdb" and
// "--- neigh" sections.
func ParseVXLANStatus(raw string) (*VXLANStatus, error) {
	st := &VXLANStatus{Raw: raw}
	lines := strings.Split(raw, "\n")
	section := "link"
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "--- fdb":
			section = "fdb"
			continue
		case line == "--- neigh":
			section = "neigh"
			continue
		case line == "":
			continue
		}
		switch section {
		case "link":
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "RX:" && f[0] != "TX:" || i+1 >= len(lines) {
				continue
			}
			vals := strings.Fields(lines[i+1])
			var c LinkCounters
			for j, name := range f[1:] {
				if j >= len(vals) {
					break
				}
				v, err := strconv.ParseUint(vals[j], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%s %s %q: %w", f[0], name, vals[j], err)
				}
				switch name {
				case "bytes":
					c.Bytes = v
				case "packets":
					c.Packets = v
				case "errors":
					c.Errors = v
				case "dropped":
					c.Dropped = v
				}
			}
			if f[0] == "RX:" {
				st.RX = c
			} else {
				st.TX = c
			}
			i++
		case "fdb":
			st.FDB = append(st.FDB, line)
		case "neigh":
			f := strings.Fields(line)
			ip, err := netip.ParseAddr(f[0])
			if err != nil {
				return nil, fmt.Errorf("neighbour %q: %w", line, err)
			}
			n := Neighbor{IP: ip, State: f[len(f)-1]}
			for j := 1; j+1 < len(f); j++ {
				if f[j] == "lladdr" {
					if n.MAC, err = net.ParseMAC(f[j+1]); err != nil {
						return nil, fmt.Errorf("neighbour %q: %w", line, err)
					}
				}
			}
			st.Neighbors = append(st.Neighbors, n)
		}
	}
	return st, nil
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

package gossip

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Timing profiles: the names of the failure-detection and gossip timings
// cluster.timing selects (WithTiming). Each trades detection time against
// false detections and probing traffic; docs/config.md has the measured
// figures of each.
const (
	TimingLAN  = "lan"  // memberlist's LAN defaults; the default
	TimingFast = "fast" // labs and tests: dead in about a second
	TimingEdge = "edge" // lossy, slow links and slow boards: fewest false suspicions
)

// TimingNames lists the profiles WithTiming knows, the default first.
func TimingNames() []string { return []string{TimingLAN, TimingFast, TimingEdge} }

// WithTiming returns cfg with the named timing profile applied ("" is
// TimingLAN), or an error naming the profiles there are.
func WithTiming(cfg Config, name string) (Config, error) {
	switch name {
	case "", TimingLAN:
		return LANTiming(cfg), nil
	case TimingFast:
		return FastTiming(cfg), nil
	case TimingEdge:
		return EdgeTiming(cfg), nil
	}
	return cfg, fmt.Errorf("gossip: timing %q is not one of %s", name, strings.Join(TimingNames(), ", "))
}

// LANTiming returns cfg with the default timings, spelled out: memberlist's
// DefaultLANConfig (probes every 1s with a 500ms timeout, SuspicionMult 4,
// gossip every 200ms, push/pull every 30s) and drover's own defaults for
// what memberlist lacks.
//
// Measured (testenv TestFailureDetection, 10 daemons in namespaces, 2-core
// VM): every other member lists a member dead 6.4 s (median; max 7.7 s)
// after a SIGKILL, 5.6 s (5.8 s) after a SIGSTOP; with the CPU saturated
// 7.3 s (7.8 s) and 6.7 s (7.4 s). No live member declared dead under load
// or with 20 % packet loss, but at 20 % loss 19 false suspicions a minute,
// each refuted. Idle gossip: 374 bytes/s sent per host.
func LANTiming(cfg Config) Config {
	cfg.ProbeInterval = time.Second
	cfg.ProbeTimeout = 500 * time.Millisecond
	cfg.GossipInterval = 200 * time.Millisecond
	cfg.PushPullInterval = 30 * time.Second
	cfg.SuspicionMult = 4
	cfg.SuspicionMaxTimeoutMult = 6
	cfg.AwarenessMaxMultiplier = 8
	cfg.IndirectChecks = 3
	cfg.DeadNodeReclaimTime = 10 * time.Second
	cfg.GossipToTheDeadTime = 30 * time.Second
	cfg.TCPTimeout = 10 * time.Second
	cfg.ReconnectInterval = 30 * time.Second
	cfg.JoinRetryMin = time.Second
	cfg.JoinRetryMax = 4 * time.Second
	return cfg
}

// EdgeTiming returns cfg with timings for edge sites: links that lose
// packets and take long round trips (cellular, satellite, long-haul Wi-Fi)
// and small ARM boards whose CPU may be saturated by their workload. There
// a false "dead" costs more than a late one: the routes of a host that is
// in fact up are withdrawn until it refutes. So, reasoning from memberlist's
// DefaultWANConfig:
//   - probes every 2s with a 1s timeout (a round trip of up to a second
//     still answers directly; WAN's 5s/3s would take half a minute to
//     notice a dead host), and 4 indirect probers instead of 3, so that a
//     probe fails only when the direct path, every indirect one and the
//     TCP fallback all lose a packet;
//   - SuspicionMult 6 (WAN's): 12 s of suspicion once 4 others confirm it,
//     time for the suspect to hear of it and refute through a lossy link;
//     up to 6× that (SuspicionMaxTimeoutMult) without confirmations;
//   - AwarenessMaxMultiplier 10: a host that sees its own probes fail
//     while others' succeed (its CPU or its link is the problem) backs off
//     to one probe every 20 s instead of accusing its peers;
//   - dead members gossiped to for 60s (WAN's), so a host falsely declared
//     dead has time to hear it and refute; TCP exchanges bounded by 15s
//     (SYN retransmits at 1, 3 and 7 s fit).
//
// Push/pull stays at every 30s, not WAN's 60s: on a lossy link it is what
// repairs a lost gossip message (a block claim, a key rotation) — gossip
// retransmits a message only a few times, a push/pull is TCP — and it
// costs a few hundred bytes per member per exchange.
//
// Gossip stays at every 200ms: it sends only when there is news, and block
// claims and key rotations wait on it. Joins while alone retry as with
// LANTiming.
//
// Measured (testenv TestFailureDetection, 10 daemons in namespaces, 2-core
// VM): every other member lists a member dead 17.8 s (median; max 19.8 s)
// after a SIGKILL, 15.7 s (20.2 s) after a SIGSTOP; with the CPU saturated
// 18.5 s (20.1 s) and 15.8 s (19.4 s); 13.8 s after a SIGKILL at 20 %
// packet loss. No live member declared dead under load or loss; at 20 %
// loss 4 false suspicions a minute (LANTiming 19, FastTiming 97), each
// refuted. Idle gossip: 279 bytes/s sent per host.
func EdgeTiming(cfg Config) Config {
	cfg = LANTiming(cfg)
	cfg.ProbeInterval = 2 * time.Second
	cfg.ProbeTimeout = time.Second
	cfg.IndirectChecks = 4
	cfg.SuspicionMult = 6
	cfg.SuspicionMaxTimeoutMult = 6
	cfg.AwarenessMaxMultiplier = 10
	cfg.GossipToTheDeadTime = 60 * time.Second
	cfg.TCPTimeout = 15 * time.Second
	return cfg
}

// DetectionBound is how long after a member of a cluster of n stops every
// other member should have declared it dead at the latest, unless probing
// itself is slowed (awareness) or packets are lost: a probe of it within
// two probe intervals, the probe's own interval, the longest suspicion
// (no confirmations), and ten gossip rounds to spread the verdict.
// Tests hold measurements to it. cfg must have its timings set (a profile).
func (cfg Config) DetectionBound(n int) time.Duration {
	return 3*cfg.ProbeInterval + cfg.maxSuspicionTimeout(n) + 10*cfg.GossipInterval
}

// maxSuspicionTimeout is memberlist's longest suspicion of a member of a
// cluster of n (state.go suspectNode): SuspicionMaxTimeoutMult × the
// confirmed suspicion time, SuspicionMult × max(1, log10(n)) × ProbeInterval.
func (cfg Config) maxSuspicionTimeout(n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	confirmed := time.Duration(float64(cfg.SuspicionMult) * scale * float64(cfg.ProbeInterval))
	return time.Duration(cfg.SuspicionMaxTimeoutMult) * confirmed
}

package gossip

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is memberlist's (and Serf's) gossip port, TCP and UDP.
const DefaultPort = 7946

// Config configures a Cluster. Every duration left zero takes its default:
// memberlist's DefaultLANConfig value, or drover's where memberlist has
// none (ReconnectInterval, ForgetAfter) or where its default does not fit
// (DeadNodeReclaimTime).
type Config struct {
	// Name is this node's name, unique in the cluster. Required.
	Name string
	// BindAddr is the address gossip listens on (TCP and UDP). Default
	// 0.0.0.0.
	BindAddr netip.Addr
	// BindPort is the gossip port. The daemon passes its configured port
	// (DefaultPort unless set); 0 lets the kernel pick a free one (tests).
	BindPort int
	// AdvertiseAddr is the address other members reach us at. Default
	// BindAddr; when BindAddr is 0.0.0.0, memberlist picks a private address
	// of this host, and when it is :: this must be set.
	AdvertiseAddr netip.Addr
	// Key is the cluster key: 16, 24 or 32 bytes, selecting AES-128, -192 or
	// -256 GCM for memberlist's gossip encryption. Required; every packet
	// and stream in and out must be encrypted with it (memberlist's
	// GossipVerifyIncoming and GossipVerifyOutgoing).
	Key []byte
	// Log receives memberlist's messages and the Cluster's own. Nil: none.
	Log *slog.Logger

	// ProbeInterval is how often memberlist probes one other member (SWIM).
	// Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// asking others to probe indirectly; at most ProbeInterval. Default
	// 500ms, or half of a shorter ProbeInterval.
	ProbeTimeout time.Duration
	// GossipInterval is how often queued state changes are sent to a few
	// random members. Default 200ms.
	GossipInterval time.Duration
	// PushPullInterval is how often the full state is exchanged with one
	// random member over TCP (anti-entropy). Default 30s.
	PushPullInterval time.Duration
	// SuspicionMult scales how long a member stays suspect before it is
	// declared dead: SuspicionMult × max(1, log10(members)) × ProbeInterval
	// once SuspicionMult-2 other members have confirmed the suspicion
	// (memberlist's Lifeguard). Default 4.
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion without confirmations:
	// it starts at SuspicionMaxTimeoutMult times the confirmed time above
	// and shrinks towards it with each confirmation. A member that cannot
	// reach the others (its own link is bad) gets no confirmations, so it
	// declares no one dead for that long. Default 6.
	SuspicionMaxTimeoutMult int
	// AwarenessMaxMultiplier bounds how far a member that sees signs of its
	// own trouble (probes it sent unanswered while others answer, having
	// to refute suspicions of itself) stretches its probe interval: up to
	// AwarenessMaxMultiplier × ProbeInterval, so a starved or badly
	// connected host probes less, and accuses less, until it recovers
	// (Lifeguard's local health). 1 turns that off. Default 8.
	AwarenessMaxMultiplier int
	// IndirectChecks is how many other members are asked to probe a member
	// that missed a direct probe. More survive more packet loss; each costs
	// a few packets per failed probe only. Default 3.
	IndirectChecks int
	// DeadNodeReclaimTime is how long after a member is declared dead its
	// name may come back from a different address (a host restarted with a
	// new underlay address). Default 10s. memberlist's own default, never,
	// would keep such a host out until every member has forgotten it.
	DeadNodeReclaimTime time.Duration
	// GossipToTheDeadTime is how long memberlist keeps sending gossip to a
	// dead member (so it can refute) before it forgets it. Default 30s.
	GossipToTheDeadTime time.Duration
	// TCPTimeout bounds a push/pull or join exchange. Default 10s.
	TCPTimeout time.Duration
	// ReconnectInterval is how often the Cluster tries to reach one member
	// it saw fail (not one that left) and, when no other member is alive,
	// the seeds given to Join: memberlist alone never heals a partition that
	// outlasts GossipToTheDeadTime. Default 30s.
	ReconnectInterval time.Duration
	// JoinRetryMin and JoinRetryMax pace the joins of a member that is
	// alone (no other member alive or suspect): it tries every seed and
	// every member it has seen, first JoinRetryMin after it found itself
	// alone, then twice as late each time up to JoinRetryMax, each delay
	// ±20 % at random so that hosts powered up together do not retry in
	// step. A seed that comes up last then costs seconds, not
	// ReconnectInterval. Defaults 1s and 4s: a late seed is found within
	// about 5 s of its start.
	JoinRetryMin time.Duration
	JoinRetryMax time.Duration
	// ForgetAfter is how long a dead or left member stays in Members (and is
	// tried by reconnects, if dead). Default 24h.
	ForgetAfter time.Duration

	// MaxStreams bounds the inbound TCP streams (joins, push/pull, TCP
	// probes) memberlist handles at once; more wait in the kernel's listen
	// backlog. Default 32.
	MaxStreams int
	// MaxStreamsPerIP bounds the inbound streams from one remote address;
	// more are closed at once. Default 8.
	MaxStreamsPerIP int
	// MaxStreamBytes bounds the size of one inbound stream's encrypted
	// message, which memberlist buffers whole before it can authenticate
	// it: strangers can make gossip hold at most MaxStreams ×
	// MaxStreamBytes. A push/pull carries every member, about 100 bytes
	// plus the node info (NodeInfo, at most memberlist's 512-byte
	// MetaMaxSize) each. Default 1 MiB: several thousand members.
	MaxStreamBytes int

	// wrapTransport, set by tests, wraps the network transport (to cut
	// links between members on loopback).
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// FastTiming returns cfg with timings for labs and tests on one machine or a
// LAN: probes every 200ms, gossip every 50ms, push/pull every 2s, reconnects
// every second, joins while alone from every 250ms up to every 2s.
//
// Measured (testenv TestFailureDetection, 10 daemons in namespaces, 2-core
// VM): every other member lists a member dead 1.09 s (median; max 1.39 s)
// after a SIGKILL, 1.32 s (1.41 s) after a SIGSTOP; with the CPU saturated
// 1.33 s (1.84 s) and 1.26 s (1.39 s). No live member declared dead under
// load or with 20 % packet loss, but at 20 % loss 97 false suspicions a
// minute, each refuted. Idle gossip: 3.2 kB/s sent per host, 8.6 times
// LANTiming's.
func FastTiming(cfg Config) Config {
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.GossipInterval = 50 * time.Millisecond
	cfg.PushPullInterval = 2 * time.Second
	cfg.SuspicionMult = 4
	cfg.SuspicionMaxTimeoutMult = 6
	cfg.AwarenessMaxMultiplier = 8
	cfg.IndirectChecks = 3
	cfg.DeadNodeReclaimTime = 500 * time.Millisecond
	cfg.GossipToTheDeadTime = 5 * time.Second
	cfg.TCPTimeout = 2 * time.Second
	cfg.ReconnectInterval = time.Second
	cfg.JoinRetryMin = 250 * time.Millisecond
	cfg.JoinRetryMax = 2 * time.Second
	return cfg
}

// withDefaults fills the zero fields and checks the rest.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		return cfg, fmt.Errorf("gossip: config: name is required")
	}
	if err := checkKey(cfg.Key); err != nil {
		return cfg, fmt.Errorf("gossip: config: cluster key: %w", err)
	}
	if !cfg.BindAddr.IsValid() {
		cfg.BindAddr = netip.IPv4Unspecified()
	}
	if cfg.BindAddr.Zone() != "" {
		return cfg, fmt.Errorf("gossip: config: bind address %s: zones are not supported", cfg.BindAddr)
	}
	if cfg.BindPort < 0 || cfg.BindPort > 65535 {
		return cfg, fmt.Errorf("gossip: config: bind port %d out of range", cfg.BindPort)
	}
	if !cfg.AdvertiseAddr.IsValid() && !cfg.BindAddr.IsUnspecified() {
		cfg.AdvertiseAddr = cfg.BindAddr
	}
	if !cfg.AdvertiseAddr.IsValid() && cfg.BindAddr.Is6() {
		return cfg, fmt.Errorf("gossip: config: bound to %s: an advertise address is required", cfg.BindAddr)
	}
	if cfg.AdvertiseAddr.IsValid() && cfg.AdvertiseAddr.IsUnspecified() {
		return cfg, fmt.Errorf("gossip: config: advertise address %s is unspecified", cfg.AdvertiseAddr)
	}
	lan := memberlist.DefaultLANConfig()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.ProbeInterval, lan.ProbeInterval)
	def(&cfg.ProbeTimeout, min(lan.ProbeTimeout, cfg.ProbeInterval/2))
	def(&cfg.GossipInterval, lan.GossipInterval)
	def(&cfg.PushPullInterval, lan.PushPullInterval)
	def(&cfg.DeadNodeReclaimTime, 10*time.Second)
	def(&cfg.GossipToTheDeadTime, lan.GossipToTheDeadTime)
	def(&cfg.TCPTimeout, lan.TCPTimeout)
	def(&cfg.ReconnectInterval, 30*time.Second)
	def(&cfg.JoinRetryMin, time.Second)
	def(&cfg.JoinRetryMax, max(4*time.Second, cfg.JoinRetryMin))
	def(&cfg.ForgetAfter, 24*time.Hour)
	for _, m := range []struct {
		name string
		v    *int
		def  int
	}{
		{"suspicion multiplier", &cfg.SuspicionMult, lan.SuspicionMult},
		{"suspicion max timeout multiplier", &cfg.SuspicionMaxTimeoutMult, lan.SuspicionMaxTimeoutMult},
		{"awareness max multiplier", &cfg.AwarenessMaxMultiplier, lan.AwarenessMaxMultiplier},
		{"indirect checks", &cfg.IndirectChecks, lan.IndirectChecks},
	} {
		if *m.v == 0 {
			*m.v = m.def
		}
		if *m.v < 1 || *m.v > 100 {
			return cfg, fmt.Errorf("gossip: config: %s %d out of range 1..100", m.name, *m.v)
		}
	}
	for _, l := range []struct {
		name string
		v    *int
		def  int
	}{
		{"max streams", &cfg.MaxStreams, 32}, {"max streams per IP", &cfg.MaxStreamsPerIP, 8},
		{"max stream bytes", &cfg.MaxStreamBytes, 1 << 20},
	} {
		if *l.v == 0 {
			*l.v = l.def
		}
		if *l.v < 0 || *l.v > 1<<30 {
			return cfg, fmt.Errorf("gossip: config: %s %d out of range 1..2^30", l.name, *l.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"probe interval", cfg.ProbeInterval}, {"probe timeout", cfg.ProbeTimeout},
		{"gossip interval", cfg.GossipInterval}, {"push/pull interval", cfg.PushPullInterval},
		{"dead node reclaim time", cfg.DeadNodeReclaimTime}, {"gossip to the dead time", cfg.GossipToTheDeadTime},
		{"TCP timeout", cfg.TCPTimeout}, {"reconnect interval", cfg.ReconnectInterval}, {"forget after", cfg.ForgetAfter},
		{"join retry min", cfg.JoinRetryMin}, {"join retry max", cfg.JoinRetryMax},
	} {
		if d.v < 0 {
			return cfg, fmt.Errorf("gossip: config: %s %v is negative", d.name, d.v)
		}
	}
	if cfg.JoinRetryMin > cfg.JoinRetryMax {
		return cfg, fmt.Errorf("gossip: config: join retry min %v is longer than max %v", cfg.JoinRetryMin, cfg.JoinRetryMax)
	}
	if cfg.ProbeTimeout > cfg.ProbeInterval {
		return cfg, fmt.Errorf("gossip: config: probe timeout %v is longer than the probe interval %v", cfg.ProbeTimeout, cfg.ProbeInterval)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// memberlistConfig is cfg (with defaults) as memberlist takes it.
func (cfg *Config) memberlistConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr.String()
	mc.BindPort = cfg.BindPort
	if cfg.AdvertiseAddr.IsValid() {
		mc.AdvertiseAddr = cfg.AdvertiseAddr.String()
	}
	mc.AdvertisePort = cfg.BindPort
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.TCPTimeout = cfg.TCPTimeout
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.AwarenessMaxMultiplier = cfg.AwarenessMaxMultiplier
	mc.IndirectChecks = cfg.IndirectChecks
	// No compression: memberlist's LZW allocates its tables per message and
	// was most of the allocation and much of the CPU of a 200-member test,
	// while what we gossip — mostly node meta with random keys in it —
	// hardly compresses. (It also leaves no compress-then-encrypt length
	// oracle.) Members that compress are still understood.
	mc.EnableCompression = false
	return mc
}

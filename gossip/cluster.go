package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/drovernet/drover/internal/ratelog"
)

// Cluster is this node's membership in a gossip cluster: it publishes this
// node's NodeInfo and keeps a table of every member memberlist has told it
// about (see Members).
//
// Locking: memberlist calls the event delegate with its own node lock held,
// and the delegate takes mu; so nothing here calls into memberlist while
// holding mu.
type Cluster struct {
	cfg Config
	log *slog.Logger
	// rlog is log for lines on paths that repeat per tick or per member
	// update: at most ratelog.Burst of a kind per ratelog.Window.
	rlog    *slog.Logger
	ml      *memberlist.Memberlist
	streams *streamGuard // memberlist's transport, screening inbound streams
	changes chan struct{}

	pubMu sync.Mutex // serializes Update, Leave and Shutdown; guards shut
	shut  bool

	metaMu sync.RWMutex // guards meta
	meta   []byte       // published node meta; replaced whole, never modified

	mu      sync.Mutex // guards members, seeds, left
	members map[string]*entry
	seeds   []string // every address given to Join, for reconnects
	left    bool

	stop chan struct{} // closed by Shutdown: housekeeping returns
	done chan struct{} // closed when housekeeping has returned

	// updateNode is c.ml.UpdateNode; a test drops updates through it.
	updateNode func(time.Duration) error

	started   time.Time   // when Start returned: alone since then, at least
	joining   atomic.Bool // a reconnect's joins are running
	joinsDone sync.WaitGroup
}

// entry is one member in the table, with what the table needs besides the
// Member it reports.
type entry struct {
	Member
	leaving      bool      // its last meta announced a Leave
	meta         []byte    // as memberlist holds it (replaced whole, never modified)
	suspectUntil time.Time // Suspect: when to assume memberlist saw it refute
}

// Start creates this node's memberlist, listening on cfg.BindAddr and
// cfg.BindPort, and publishes info. It joins no one: see Join.
func Start(cfg Config, info NodeInfo) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	meta, err := info.MarshalBinary()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Log,
		rlog:    ratelog.New(cfg.Log, 0, 0),
		changes: make(chan struct{}, 1),
		meta:    meta,
		members: map[string]*entry{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		started: time.Now(),
	}
	mc := cfg.memberlistConfig()
	d := &delegate{c}
	mc.Delegate, mc.Events, mc.Ping, mc.Alive = d, d, d, d
	mc.Logger = log.New(newLogWriter(cfg.Log, c.markSuspect), "", 0)

	bind := netip.AddrPortFrom(cfg.BindAddr, uint16(cfg.BindPort))
	nt, err := newNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr.String()},
		BindPort:  cfg.BindPort,
		Logger:    mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: listen on %s: %w", bind, err)
	}
	if cfg.BindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
		c.cfg.BindPort = mc.BindPort
		bind = netip.AddrPortFrom(cfg.BindAddr, uint16(mc.BindPort))
	}
	c.streams = newStreamGuard(nt, streamLimits{
		total: cfg.MaxStreams, perIP: cfg.MaxStreamsPerIP,
		maxBytes: uint32(cfg.MaxStreamBytes), header: min(streamHeaderTimeout, cfg.TCPTimeout),
	}, c.rlog)
	mc.Transport = c.streams
	if cfg.wrapTransport != nil {
		mc.Transport = cfg.wrapTransport(c.streams)
	}
	c.ml, err = memberlist.Create(mc)
	if err != nil {
		_ = c.streams.Shutdown()
		return nil, fmt.Errorf("gossip: start on %s: %w", bind, err)
	}
	c.updateNode = c.ml.UpdateNode
	go c.housekeeping()
	c.log.Info("gossip started", "addr", bind)
	return c, nil
}

// newNetTransport binds memberlist's TCP and UDP listeners. With port 0 the
// kernel picks the TCP port and UDP may find it taken: retry a few times, as
// memberlist does when it makes the transport itself.
func newNetTransport(nc *memberlist.NetTransportConfig) (*memberlist.NetTransport, error) {
	tries := 1
	if nc.BindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			return nt, nil
		}
	}
	return nil, err
}

// LocalName is this node's name.
func (c *Cluster) LocalName() string { return c.cfg.Name }

// LocalAddr is the gossip address this node advertises (with the port the
// kernel picked, if Config.BindPort was 0).
func (c *Cluster) LocalAddr() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.members[c.cfg.Name]; e != nil {
		return e.Addr
	}
	return netip.AddrPort{}
}

// Join contacts each seed ("host" or "host:port"; the port defaults to this
// node's gossip port) and exchanges full state with it, and returns how
// many it reached. It fails only if it reached none. The seeds are kept:
// while no other member is alive, they are tried again every
// ReconnectInterval.
func (c *Cluster) Join(seeds []string) (int, error) {
	c.mu.Lock()
	for _, s := range seeds {
		if !slices.Contains(c.seeds, s) {
			c.seeds = append(c.seeds, s)
		}
	}
	c.mu.Unlock()
	if len(seeds) == 0 {
		return 0, nil
	}
	n, err := c.ml.Join(seeds)
	if err != nil {
		return n, fmt.Errorf("gossip: join through %s: %w", strings.Join(seeds, ", "), err)
	}
	return n, nil
}

// Update publishes info in place of what was published before. It returns
// once memberlist has taken it (it waits up to ProbeInterval for the first
// gossip of it; the rest, and push/pull, happen in the background).
func (c *Cluster) Update(info NodeInfo) error {
	meta, err := info.MarshalBinary()
	if err != nil {
		return err
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if c.shut {
		return errors.New("gossip: update after shutdown")
	}
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if left {
		return errors.New("gossip: update after leave")
	}
	c.setMeta(meta)
	return c.publish(meta, c.cfg.ProbeInterval)
}

// publishTries bounds publish's attempts.
const publishTries = 5

// publish has memberlist take meta (set with setMeta) as this node's and
// gossip it, and checks that it did. memberlist's UpdateNode numbers the
// update before it takes its node lock; a refutation of a suspicion (or
// of a stale record of this node) that takes the lock in between gets the
// next number, and the update then looks older than this node's own
// record and is dropped without an error: a block claim published that
// way reached no one, not even this node's own table, and in a 100-host
// start-up storm, where starved hosts are suspected and refute all the
// time, one host's claim was never seen (TestPublishSurvivesDroppedUpdate). The
// update is in memberlist when its NotifyUpdate for this node has carried
// it (alive records it); until then it is made again, with a new number.
// UpdateNode's timeout error only says that the broadcast is still going
// out.
func (c *Cluster) publish(meta []byte, wait time.Duration) error {
	for try := 1; ; try++ {
		_ = c.updateNode(wait)
		if c.holds(meta) {
			return nil
		}
		if try == publishTries {
			return fmt.Errorf("gossip: memberlist dropped this node's update %d times", try)
		}
		c.rlog.Warn("this node's update was dropped by memberlist (a refutation took its number); publishing again", "try", try)
	}
}

// holds reports whether memberlist's record of this node carries meta.
func (c *Cluster) holds(meta []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.members[c.cfg.Name]
	return e != nil && bytes.Equal(e.meta, meta)
}

func (c *Cluster) setMeta(meta []byte) {
	c.metaMu.Lock()
	c.meta = meta
	c.metaMu.Unlock()
}

// Leave announces that this node is leaving, so other members list it as
// Left at once instead of detecting a failure, and waits up to timeout for
// the announcement to go out. First it publishes its meta once more with
// the leaving flag set (memberlist itself does not tell members that left
// from failed ones), then memberlist's leave message follows. After Leave
// the node takes no part in the cluster; call Shutdown.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if c.shut {
		return errors.New("gossip: leave after shutdown")
	}
	c.mu.Lock()
	left := c.left
	c.left = true // no more reconnects
	c.mu.Unlock()
	if left {
		return nil
	}
	start := time.Now()
	c.metaMu.RLock()
	meta := slices.Clone(c.meta)
	c.metaMu.RUnlock()
	meta[1] |= flagLeaving
	c.setMeta(meta)
	// The leave message must not overtake the flagged meta (a newer message
	// about a node replaces an older one in memberlist's broadcast queue),
	// so wait for that broadcast to be sent its full count first.
	_ = c.ml.UpdateNode(timeout / 2)
	rest := max(timeout-time.Since(start), time.Millisecond) // 0 would wait forever
	err := c.ml.Leave(rest)

	c.mu.Lock()
	if e := c.members[c.cfg.Name]; e != nil {
		e.State, e.Since = Left, time.Now()
	}
	c.mu.Unlock()
	c.notify()
	if err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	c.log.Info("left the cluster")
	return nil
}

// Shutdown stops gossip and closes the listeners, without telling anyone
// (see Leave). Members keeps the last table.
func (c *Cluster) Shutdown() error {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if c.shut {
		return nil
	}
	c.shut = true
	c.streams.cancelDials() // a join towards an unreachable address ends now
	close(c.stop)
	<-c.done
	if err := c.ml.Shutdown(); err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

// Changes delivers a value after any change to what Members returns: a
// member joined, left, failed, came back, became or stopped being suspect,
// or published new info. Notifications coalesce (the channel holds one and
// sends never block), so a receiver reads Members after each.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

func (c *Cluster) notify() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Members returns every member in the table, sorted by name, this node
// included.
//
// The table follows memberlist's events, with what memberlist keeps to
// itself filled in as follows:
//   - Alive: memberlist announced the member (join, or update of its meta).
//   - Suspect: this node's own probes of it went unanswered (memberlist
//     logs that, but raises no event, and says nothing when suspicion
//     reaches it through gossip instead). It is Alive again when a probe
//     of ours succeeds, when any alive message about it arrives (as a
//     refutation does; memberlist raises no event for that either), or
//     when memberlist's longest suspicion time has passed without it
//     being declared dead. Suspect is a hint; Dead is the verdict.
//   - Dead: memberlist declared it failed.
//   - Left: memberlist declared it gone and its last meta announced a Leave.
//     A member that missed that meta (it is gossiped just before the leave
//     message) shows the leaver as Dead.
//
// memberlist forgets dead members after GossipToTheDeadTime; the table keeps
// them, with their last Info, for ForgetAfter. A member whose meta does not
// decode is listed with InfoErr set and a zero Info: callers must ignore it.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	ms := make([]Member, 0, len(c.members))
	for _, e := range c.members {
		ms = append(ms, e.Member)
	}
	c.mu.Unlock()
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return ms
}

// housekeeping ends suspicions that memberlist must have resolved, forgets
// old dead and left members, and reconnects, until Shutdown. Reconnects run
// every ReconnectInterval while other members are alive, and while this node
// is alone every JoinRetryMin, doubling up to JoinRetryMax (retryDelay).
func (c *Cluster) housekeeping() {
	defer close(c.done)
	defer c.joinsDone.Wait()
	tick := time.NewTicker(c.cfg.ProbeInterval)
	defer tick.Stop()
	var st settleState
	attempt := 0
	reconnect := time.NewTimer(c.cfg.JoinRetryMin)
	defer reconnect.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-tick.C:
			c.expire(now)
			_, alone := c.Alone()
			if st.due(now, alone, c.cfg.PushPullInterval) {
				c.pushPull()
			}
		case <-reconnect.C:
			next := c.cfg.ReconnectInterval
			if c.reconnect() {
				next = retryDelay(attempt, c.cfg.JoinRetryMin, c.cfg.JoinRetryMax, rand.Float64())
				attempt++
			} else {
				attempt = 0
			}
			reconnect.Reset(next)
		}
	}
}

// settleAfter are the times after this node stops being alone at which it
// exchanges full state with one random member (pushPull), when they come
// before memberlist's own push/pull. The state a join brings is a snapshot:
// updates that were being gossiped while it was taken went to members
// that knew of us, and in a start-up storm that may be nobody. In a
// 100-host lab with the default 30 s interval (memberlist stretches it to
// 90 s at 100 members), a host joined last listed a member without the
// block it had claimed for over a minute.
var settleAfter = []time.Duration{3 * time.Second, 15 * time.Second}

// settleState schedules the push/pulls of settleAfter; only housekeeping
// uses it.
type settleState struct {
	joined bool        // not alone at the last tick
	next   []time.Time // push/pulls still due, earliest first
}

// due is called every tick with whether this node is alone now; it reports
// whether a push/pull is due. A node that becomes alone again starts over.
func (s *settleState) due(now time.Time, alone bool, pushPull time.Duration) bool {
	switch {
	case alone:
		s.joined, s.next = false, nil
		return false
	case !s.joined:
		s.joined = true
		for _, d := range settleAfter {
			if d < pushPull {
				s.next = append(s.next, now.Add(d))
			}
		}
	}
	if len(s.next) == 0 || now.Before(s.next[0]) {
		return false
	}
	s.next = s.next[1:]
	return true
}

// pushPull exchanges full state with one random alive member, through a
// join (memberlist's push/pull), on its own goroutine as reconnects do;
// it is skipped while a reconnect's joins run.
func (c *Cluster) pushPull() {
	addrs := c.AliveAddrs()
	if len(addrs) == 0 || !c.joining.CompareAndSwap(false, true) {
		return
	}
	t := addrs[rand.IntN(len(addrs))]
	c.joinsDone.Add(1)
	go func() {
		defer c.joinsDone.Done()
		defer c.joining.Store(false)
		if _, err := c.ml.Join([]string{t}); err != nil {
			c.rlog.Debug("push/pull failed", "addr", t, "err", err)
		}
	}()
}

// retryDelay is the wait before join attempt n+1 (n from 0) while alone:
// lo·2^n, at most hi, scaled by 0.8 + 0.4·r for r in [0, 1).
func retryDelay(n int, lo, hi time.Duration, r float64) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	return time.Duration(float64(min(d, hi)) * (0.8 + 0.4*r))
}

func (c *Cluster) expire(now time.Time) {
	changed := false
	c.mu.Lock()
	for name, e := range c.members {
		switch {
		case e.State == Suspect && now.After(e.suspectUntil):
			e.State, e.Since = Alive, now
			changed = true
		case (e.State == Dead || e.State == Left) && name != c.cfg.Name && now.Sub(e.Since) > c.cfg.ForgetAfter:
			delete(c.members, name)
			changed = true
		}
	}
	c.mu.Unlock()
	if changed {
		c.notify()
	}
}

// reconnect tries to reach one random member that failed (memberlist does
// not retry a member it has forgotten, so a partition longer than
// GossipToTheDeadTime would never heal) and, while no other member is
// alive, every seed and every member ever seen. A join exchanges full state
// both ways: each side learns that the other thinks it dead, refutes, and the
// refutation reaches the other side at the latest with the next attempt.
// The joins run on their own goroutine (an unreachable address holds one for
// TCPTimeout), one batch at a time. It reports whether this node is alone.
func (c *Cluster) reconnect() bool {
	c.mu.Lock()
	if c.left {
		c.mu.Unlock()
		return false
	}
	var dead, gone []string
	alone := true
	for name, e := range c.members {
		if name == c.cfg.Name {
			continue
		}
		switch e.State {
		case Alive, Suspect:
			alone = false
		case Dead, Left:
			if e.Addr.IsValid() {
				gone = append(gone, e.Addr.String())
				if e.State == Dead {
					dead = append(dead, e.Addr.String())
				}
			}
		}
	}
	var targets []string
	if alone {
		targets = append(targets, c.seeds...)
		for _, g := range gone {
			if !slices.Contains(targets, g) {
				targets = append(targets, g)
			}
		}
	} else if len(dead) > 0 {
		targets = append(targets, dead[rand.IntN(len(dead))])
	}
	c.mu.Unlock()
	if len(targets) == 0 || !c.joining.CompareAndSwap(false, true) {
		return alone
	}
	if alone {
		c.rlog.Info("alone: trying to join", "addrs", strings.Join(targets, ","))
	}
	c.joinsDone.Add(1)
	go func() {
		defer c.joinsDone.Done()
		defer c.joining.Store(false)
		for _, t := range targets {
			select {
			case <-c.stop:
				return
			default:
			}
			if _, err := c.ml.Join([]string{t}); err != nil {
				c.rlog.Debug("reconnect failed", "addr", t, "err", err)
			}
		}
	}()
	return alone
}

// Alone reports whether no other member is alive or suspect, and since
// when: the last time another member was seen alive, or Start.
func (c *Cluster) Alone() (since time.Time, alone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	since = c.started
	for name, e := range c.members {
		if name == c.cfg.Name {
			continue
		}
		if e.State == Alive || e.State == Suspect {
			return time.Time{}, false
		}
		if e.Since.After(since) {
			since = e.Since
		}
	}
	return since, true
}

// AddSeeds adds addresses to try while alone, as if given to Join, without
// trying them now (remembered members of an earlier run: AddrBook).
func (c *Cluster) AddSeeds(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(c.seeds, a) {
			c.seeds = append(c.seeds, a)
		}
	}
}

// AliveAddrs returns the gossip addresses of the other members alive now.
func (c *Cluster) AliveAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name, e := range c.members {
		if name != c.cfg.Name && (e.State == Alive || e.State == Suspect) && e.Addr.IsValid() {
			out = append(out, e.Addr.String())
		}
	}
	slices.Sort(out)
	return out
}

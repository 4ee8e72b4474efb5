package gossip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// cutTransport drops everything its member sends to the addresses in cut,
// and refuses stream dials to them. Cutting both ends of a link this way
// cuts it both ways, UDP and TCP, without root.
type cutTransport struct {
	memberlist.NodeAwareTransport
	mu  sync.Mutex
	cut map[netip.AddrPort]bool
}

var errCut = errors.New("link cut by the test")

func (t *cutTransport) set(addrs []netip.AddrPort, cut bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		t.cut[a] = cut
	}
}

func (t *cutTransport) isCut(addr string) bool {
	a, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cut[netip.AddrPortFrom(a.Addr().Unmap(), a.Port())]
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isCut(addr) {
		return time.Now(), nil // lost on the way
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.isCut(a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isCut(addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.isCut(a.Addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// TestPartitionHeals cuts one member off from the two others for longer
// than memberlist keeps gossiping to the dead, then restores the links:
// both sides list the other dead, and the reconnects bring everyone back.
func TestPartitionHeals(t *testing.T) {
	leakCheck(t)
	tr := map[string]*cutTransport{}
	var cs []*Cluster
	for i, name := range []string{"a", "b", "island"} {
		ct := &cutTransport{cut: map[netip.AddrPort]bool{}}
		tr[name] = ct
		cs = append(cs, startNode(t, name, testInfo(name, i+1), func(c *Config) {
			c.GossipToTheDeadTime = time.Second // memberlist forgets the other side during the cut
			c.wrapTransport = func(nt memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				ct.NodeAwareTransport = nt
				return ct
			}
		}))
	}
	a, b, island := cs[0], cs[1], cs[2]
	for _, c := range cs[1:] {
		if _, err := c.Join([]string{a.LocalAddr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	allAlive := func() error {
		for _, c := range cs {
			for _, o := range cs {
				if err := expectState(c, o.LocalName(), Alive, nil); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := poll(10*time.Second, allAlive); err != nil {
		t.Fatal(err)
	}

	mainland := []netip.AddrPort{a.LocalAddr(), b.LocalAddr()}
	tr["island"].set(mainland, true)
	tr["a"].set([]netip.AddrPort{island.LocalAddr()}, true)
	tr["b"].set([]netip.AddrPort{island.LocalAddr()}, true)
	cut := time.Now()
	if err := poll(15*time.Second, func() error {
		for _, c := range cs[:2] {
			if err := expectState(c, "island", Dead, nil); err != nil {
				return err
			}
			if err := expectState(island, c.LocalName(), Dead, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut: both sides list the other dead after %v", time.Since(cut).Round(time.Millisecond))
	// Stay cut until memberlist has forgotten the other side: only the
	// reconnects can heal it now. (The table keeps them.)
	if err := poll(15*time.Second, func() error {
		for _, c := range cs {
			if n := c.ml.NumMembers(); n != map[bool]int{true: 1, false: 2}[c == island] {
				return fmt.Errorf("%s: memberlist still has %d members", c.LocalName(), n)
			}
			m, _ := member(c, map[bool]string{true: "a", false: "island"}[c == island])
			if time.Since(m.Since) < 2*c.cfg.GossipToTheDeadTime {
				return fmt.Errorf("%s: dead for only %v", c.LocalName(), time.Since(m.Since))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	tr["island"].set(mainland, false)
	tr["a"].set([]netip.AddrPort{island.LocalAddr()}, false)
	tr["b"].set([]netip.AddrPort{island.LocalAddr()}, false)
	healed := time.Now()
	if err := poll(15*time.Second, allAlive); err != nil {
		t.Fatal(err)
	}
	t.Logf("healed: all alive %v after the links came back (reconnect interval %v)",
		time.Since(healed).Round(time.Millisecond), a.cfg.ReconnectInterval)
}

// TestSuspicionRefuted cuts a member off just long enough to be suspected:
// once the link is back it refutes, and the others list it Alive again
// without ever listing it Dead.
func TestSuspicionRefuted(t *testing.T) {
	leakCheck(t)
	tr := map[string]*cutTransport{}
	var cs []*Cluster
	for i, name := range []string{"a", "b", "flaky"} {
		ct := &cutTransport{cut: map[netip.AddrPort]bool{}}
		tr[name] = ct
		cs = append(cs, startNode(t, name, testInfo(name, i+1), func(c *Config) {
			c.SuspicionMult = 25 // 5s of suspicion before a verdict: time to refute
			c.wrapTransport = func(nt memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				ct.NodeAwareTransport = nt
				return ct
			}
		}))
	}
	a, b, flaky := cs[0], cs[1], cs[2]
	for _, c := range cs[1:] {
		if _, err := c.Join([]string{a.LocalAddr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range cs[:2] {
			if err := expectState(c, "flaky", Alive, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	others := []netip.AddrPort{a.LocalAddr(), b.LocalAddr()}
	tr["flaky"].set(others, true)
	tr["a"].set([]netip.AddrPort{flaky.LocalAddr()}, true)
	tr["b"].set([]netip.AddrPort{flaky.LocalAddr()}, true)
	cut := time.Now()
	var suspectedBy *Cluster
	if err := poll(10*time.Second, func() error {
		for _, c := range cs[:2] {
			if m, _ := member(c, "flaky"); m.State == Suspect {
				suspectedBy = c
				return nil
			}
		}
		return errors.New("nobody suspects the cut member")
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s suspects the cut member after %v", suspectedBy.LocalName(), time.Since(cut).Round(time.Millisecond))
	tr["flaky"].set(others, false)
	tr["a"].set([]netip.AddrPort{flaky.LocalAddr()}, false)
	tr["b"].set([]netip.AddrPort{flaky.LocalAddr()}, false)
	restored := time.Now()
	var verdict []string
	if err := poll(10*time.Second, func() error {
		for _, c := range cs[:2] {
			m, _ := member(c, "flaky")
			if m.State == Dead || m.State == Left {
				verdict = append(verdict, c.LocalName()+" lists it "+m.State.String())
			}
			if m.State != Alive {
				return fmt.Errorf("%s lists flaky as %v", c.LocalName(), m.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("alive again everywhere %v after the link came back", time.Since(restored).Round(time.Millisecond))
	if verdict != nil {
		t.Errorf("the member refuted, but on the way: %v", verdict)
	}
}

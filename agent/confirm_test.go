package agent

import (
	"strings"
	"testing"
	"time"
)

// confirming is a fakeMembership whose Updates land only when the test
// says (kube's, while the API server is away).
type confirming struct {
	*fakeMembership
	landed bool
}

func (c *confirming) Published() bool { return c.landed }

// A rotation whose key cannot be published (the API server away) keeps
// sending with, and keeps, the previous key however long that lasts; a
// further rotation waits; once published, the switch delay and grace
// period run as usual.
func TestRotationAwaitsPublication(t *testing.T) {
	h := newHarness(t)
	cm := &confirming{fakeMembership: h.m, landed: true}
	h.a.Attach(cm)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	oldParty := h.ourParty()
	oldOut := h.r.peer("h2").Out
	oldIn := h2.outSA(t, oldParty).SPI()

	cm.landed = false
	h.a.Rotate()
	newParty := h.ourParty()
	if newParty.Epoch != oldParty.Epoch+1 {
		t.Fatalf("epoch after Rotate: got %d, want %d", newParty.Epoch, oldParty.Epoch+1)
	}
	// Far past the switch delay and grace period, still unpublished.
	for range 10 {
		h.clock.add(grace)
		h.step()
	}
	p := h.r.peer("h2")
	if p.Out != oldOut {
		t.Fatal("outbound switched to a key that was never published")
	}
	if !hasInSPI(p, oldIn) {
		t.Fatal("the previous key's inbound SA was erased while the new key was unpublished")
	}
	if !h.a.timed {
		t.Fatal("timed false while a rotated key waits to be published: Run would not look again for 2 s")
	}
	h.a.Rotate()
	if got := h.ourParty().Epoch; got != newParty.Epoch {
		t.Fatalf("a second rotation while unpublished: epoch %d, want %d (deferred)", got, newParty.Epoch)
	}
	if !strings.Contains(h.logs.String(), "key rotation deferred") {
		t.Fatal("the deferred rotation was not logged")
	}

	cm.landed = true
	h.step() // confirmation: the switch delay starts now
	h.clock.add(switchD - time.Millisecond)
	h.step()
	if h.r.peer("h2").Out != oldOut {
		t.Fatal("outbound switched before the switch delay after publication ended")
	}
	h.clock.add(2 * time.Millisecond)
	h.step()
	if got, want := h.r.peer("h2").Out.SPI(), h2.inSPI(t, newParty); got != want {
		t.Fatalf("outbound after publication and the switch delay: SPI %#08x, want %#08x", got, want)
	}
	h.clock.add(grace)
	h.step()
	if hasInSPI(h.r.peer("h2"), oldIn) {
		t.Fatal("old inbound SA still installed after the grace period following publication")
	}
}

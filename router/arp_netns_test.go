package router

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/internal/netnstest"
)

// TestAnswerARPKernel: on a real veth in a namespace, the kernel's ARP
// request for a remote container's address is answered with the bridge
// side's MAC, and AnswerARP returns as soon as its context ends instead of
// waiting out the socket's receive timeout (it held a daemon's shutdown,
// and with it the BGP Cease, for up to a second).
func TestAnswerARPKernel(t *testing.T) {
	ns := netnstest.New(t, "arp")
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	const br, station = "drv-arpbr", "drv-arpst"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: br}, PeerName: station}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{br, station} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := h.LinkByName(station)
	addr, _ := netlink.ParseAddr("10.42.1.2/16")
	if err := h.AddrAdd(st, addr); err != nil {
		t.Fatal(err)
	}
	brLink, _ := h.LinkByName(br)

	r := arpRouter(t, io.Discard)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return r.AnswerARP(ctx, br) }) }()

	// The station's kernel asks for b's container, retried until the
	// responder is attached; the answer is the bridge side's MAC.
	remote := "10.42.2.9"
	var neigh string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		_ = exec.Command("ip", "netns", "exec", ns.Name, "ping", "-c", "1", "-W", "0.3", remote).Run()
		out, _ := exec.Command("ip", "-n", ns.Name, "neigh", "show", remote, "dev", station).CombinedOutput()
		if neigh = strings.TrimSpace(string(out)); strings.Contains(neigh, "lladdr") {
			break
		}
	}
	if want := fmt.Sprintf("lladdr %s", brLink.Attrs().HardwareAddr); !strings.Contains(neigh, want) {
		t.Fatalf("station's neighbour entry for %s: got %q, want %q", remote, neigh, want)
	}
	if got := r.Status().ARPReplies; got == 0 {
		t.Errorf("arp_replies: got 0, want at least 1")
	}

	stop := time.Now()
	cancel()
	select {
	case err := <-done:
		if took := time.Since(stop); took > 200*time.Millisecond {
			t.Errorf("AnswerARP returned %v after its context ended, want at once (under 200 ms)", took)
		}
		if err != nil {
			t.Errorf("AnswerARP: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("AnswerARP still running 3 s after its context ended")
	}
}

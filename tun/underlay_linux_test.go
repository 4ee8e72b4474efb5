package tun

import (
	"net/netip"
	"slices"
	"testing"
)

// The loopback interface holds 127.0.0.1/8 on every Linux host, and listing
// addresses needs no privilege.
func TestUnderlaySubnetsLoopback(t *testing.T) {
	ul, err := UnderlayLinkOf(netip.MustParseAddr("127.0.0.1"))
	got := ul.Subnets
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("127.0.0.0/8"); !slices.Contains(got, want) {
		t.Fatalf("got %v, want it to hold %v", got, want)
	}
	ul, err = UnderlayLinkOf(netip.MustParseAddr("203.0.113.254"))
	got = ul.Subnets // TEST-NET-3: held by no interface
	if err != nil || got != nil {
		t.Fatalf("address held by no interface: got %v, %v; want none", got, err)
	}
}

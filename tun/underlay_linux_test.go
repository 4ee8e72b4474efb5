package tun

import (
	"net/netip"
	"slices"
	"testing"
)

// The loopback interface holds 127.0.0.1/8 on every Linux host, and listing
// addresses needs no privilege.
func TestUnderlaySubnetsLoopback(t *testing.T) {
	got, err := UnderlaySubnets(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("127.0.0.0/8"); !slices.Contains(got, want) {
		t.Fatalf("got %v, want it to hold %v", got, want)
	}
	got, err = UnderlaySubnets(netip.MustParseAddr("203.0.113.254")) // TEST-NET-3: held by no interface
	if err != nil || got != nil {
		t.Fatalf("address held by no interface: got %v, %v; want none", got, err)
	}
}

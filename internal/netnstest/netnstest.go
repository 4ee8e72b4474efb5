// Package netnstest gives tests named network namespaces (drv-*) that are
// removed when the test ends. The namespaces themselves are labns's; this
// package adds what needs package testing, so the product never links it.
package netnstest

import (
	"os"
	"testing"

	"github.com/drovernet/drover/internal/labns"
)

// NetNS is a named network namespace (/run/netns/NAME).
type NetNS = labns.NetNS

// New creates a namespace named labns.UniqueName(tag) that is deleted when
// the test ends. It skips the test when not root.
func New(t testing.TB, tag string) *NetNS {
	t.Helper()
	NeedRoot(t)
	n, err := labns.Create(labns.UniqueName(tag))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// NeedRoot skips the test when not running as root: namespaces, veth,
// bridges and TUN devices need CAP_NET_ADMIN. CI runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and devices (CI runs as root): sudo go test ./...")
	}
}

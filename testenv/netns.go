package testenv

import (
	"testing"

	"github.com/drovernet/drover/internal/netnstest"
)

// Namespaces are netnstest's (a leaf package, so that the packages testenv
// imports can use them in their own tests); these names are testenv's API.

// Prefix starts the name of everything testenv creates, so leftovers can be
// recognised and swept.
const Prefix = netnstest.Prefix

// NetNS is a named network namespace (/run/netns/NAME).
type NetNS = netnstest.NetNS

// UniqueName returns Prefix + tag + a suffix unique to this process.
func UniqueName(tag string) string { return netnstest.UniqueName(tag) }

// CreateNetNS creates the named namespace with loopback up.
func CreateNetNS(name string) (*NetNS, error) { return netnstest.Create(name) }

// NewNetNS creates a namespace that is deleted when the test ends.
func NewNetNS(t testing.TB, tag string) *NetNS {
	t.Helper()
	return netnstest.New(t, tag)
}

// Sweep deletes the leftover namespaces whose names start with Prefix+tag.
func Sweep(tag string) []string { return netnstest.Sweep(tag) }

// NeedRoot skips the test when not running as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	netnstest.NeedRoot(t)
}

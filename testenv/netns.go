package testenv

import (
	"testing"

	"github.com/drovernet/drover/internal/labns"
	"github.com/drovernet/drover/internal/netnstest"
)

// NetNS is a named network namespace (/run/netns/NAME).
type NetNS = labns.NetNS

// NewNetNS creates a namespace that is deleted when the test ends.
func NewNetNS(t testing.TB, tag string) *NetNS {
	t.Helper()
	return netnstest.New(t, tag)
}

// NeedRoot skips the test when not running as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	netnstest.NeedRoot(t)
}

package testenv

import (
	"os"
	"testing"
)

// NeedRoot skips the test when not running as root: namespaces, veth,
// bridges and TUN devices need CAP_NET_ADMIN. CI runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root): sudo go test ./...")
	}
}

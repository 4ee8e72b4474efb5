package tun

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/netnstest"
)

// roChildEnv tells the re-executed test binary that it runs as the child of
// TestConfigureReadOnlyProcSys.
const roChildEnv = "DROVER_TUN_RO_PROC_SYS_CHILD"

// TestConfigureReadOnlyProcSys runs Configure where /proc/sys is read-only,
// as a container runtime mounts it in a pod (hostNetwork, NET_ADMIN, not
// privileged): the test binary is re-executed in a mount and network
// namespace of its own (unshare) with /proc/sys bind-mounted read-only. The
// TUN must come up without an IPv6 link-local address, addr_gen_mode 1.
func TestConfigureReadOnlyProcSys(t *testing.T) {
	if os.Getenv(roChildEnv) == "1" {
		configureReadOnlyChild(t)
		return
	}
	netnstest.NeedRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to make a mount namespace")
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("IPv6 is off in this kernel (ipv6.disable=1): no addr_gen_mode to check")
	}
	// Private propagation: the read-only bind mount stays in the child's
	// mount namespace; the child's network namespace dies with it.
	script := `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$0" -test.run='^TestConfigureReadOnlyProcSys$' -test.v`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--net", "--", "sh", "-c", script, os.Args[0])
	cmd.Env = append(os.Environ(), roChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestConfigureReadOnlyProcSys") {
		t.Fatal("child did not pass")
	}
}

func configureReadOnlyChild(t *testing.T) {
	// The mount really is read-only (checked without writing anything).
	if err := unix.Access("/proc/sys/net/ipv6/conf/all/addr_gen_mode", unix.W_OK); !errors.Is(err, unix.EROFS) {
		t.Fatalf("access(W_OK) on /proc/sys: got %v, want EROFS (the setup did not make it read-only)", err)
	}
	f, err := Open(tunName)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Configure(tunName, 1400, []netip.Addr{tunAddr}); err != nil {
		t.Fatalf("Configure with a read-only /proc/sys: %v", err)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + tunName + "/addr_gen_mode")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "1" {
		t.Fatalf("addr_gen_mode: got %s, want 1 (none)", got)
	}
	l, err := netlink.LinkByName(tunName)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().OperState == netlink.OperDown || l.Attrs().Flags&unix.IFF_UP == 0 {
		t.Fatalf("%s not up: %v", tunName, l.Attrs().Flags)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Fatalf("IPv6 addresses on %s: got %v, want none (no link-local)", tunName, addrs)
	}
}

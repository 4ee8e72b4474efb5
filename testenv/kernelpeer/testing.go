package kernelpeer

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// tool is a program a peer needs on the host, and the Debian package with it.
type tool struct{ name, pkg string }

var (
	vxlanTools = []tool{{"ip", "iproute2"}, {"bridge", "iproute2"}, {"ethtool", "ethtool"}}
	// UML boots on the host's root file system, so its init uses the host's
	// modprobe, sysctl and perl (the UDP_ENCAP socket) too.
	espTools = []tool{
		{"linux.uml", "user-mode-linux"}, {"ip", "iproute2"}, {"ethtool", "ethtool"},
		{"perl", "perl"}, {"modprobe", "kmod"}, {"sysctl", "procps"}, {"setsid", "util-linux"},
	}
)

// missing returns the tools not found in PATH (plus the sbin directories,
// which a non-login root shell may lack), as "name (apt-get install pkg)".
func missing(tools []tool) []string {
	var out []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.name); err == nil {
			continue
		}
		found := false
		for _, d := range []string{"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"} {
			if _, err := os.Stat(d + t.name); err == nil {
				found = true
				break
			}
		}
		if !found {
			out = append(out, t.name+" (apt-get install "+t.pkg+")")
		}
	}
	return out
}

// NeedRoot skips the test when not running as root (as testenv.NeedRoot):
// the peers create namespaces, veths, bridges and TAP devices.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the kernel peers create network namespaces, veth and TAP devices (CI runs as root): sudo go test ./testenv/kernelpeer/")
	}
}

// NeedUML skips the test when not root and fails it when a program the UML
// ESP peer needs is missing: CI runs as root and installs them, so a missing
// linux.uml there is a broken setup, not a reason to skip.
func NeedUML(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	if m := missing(espTools); len(m) > 0 {
		t.Fatalf("kernel ESP peer needs: %s", strings.Join(m, ", "))
	}
}

// NeedVXLAN skips when not root and fails when iproute2 is missing.
func NeedVXLAN(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	if m := missing(vxlanTools); len(m) > 0 {
		t.Fatalf("kernel VXLAN peer needs: %s", strings.Join(m, ", "))
	}
}

// NewESP starts an ESP peer (NeedUML first) that is closed when the test
// ends; a failure to start fails the test.
func NewESP(t testing.TB, o ESPOptions) *ESPPeer {
	t.Helper()
	NeedUML(t)
	p, err := StartESP(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close ESP peer %s: %v", p.Name, err)
		}
	})
	t.Logf("kernel ESP peer %s up in %v (backend %s, %s, out SPI %#08x, in SPI %#08x)",
		p.Name, p.Boot.Round(1e6), p.Backend, p.AEAD, p.SPIOut, p.SPIIn)
	return p
}

// NewVXLAN starts a VXLAN peer that is closed when the test ends.
func NewVXLAN(t testing.TB, o VXLANOptions) *VXLANPeer {
	t.Helper()
	NeedVXLAN(t)
	p, err := StartVXLAN(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close VXLAN peer %s: %v", p.Name, err)
		}
	})
	return p
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/internal/statedir"
)

// loopbackConfig is a valid configuration on the loopback interface (which
// holds 127.0.0.0/8 on every Linux host), with extra prefixes. Should a
// check below fail to fire, the daemon would set up a TUN of its own name,
// so the context handed to runDaemon is already cancelled: it stops at once.
func loopbackConfig(t *testing.T, prefixes string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
node: {name: t, underlay: 127.0.0.1, tun: drv-cfgtest, bridge: none, prefixes: [%s]}
encapsulation: vxlan
mtu: 1500
control_socket: none
state_dir: %s
`, prefixes, filepath.Join(t.TempDir(), "state"))
	c, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runCancelled(t *testing.T, c *config.Config) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return runDaemon(ctx, c, slog.New(slog.NewTextHandler(t.Output(), nil)))
}

// The careless fourth host: what its configuration alone shows is
// wrong stops `drover run` with status 2, each prefix named.
func TestRunRefusesCarelessPrefixes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h4.yaml")
	y := "node: {name: h4, underlay: 192.0.2.4, prefixes: [100.64.0.0/24, 192.0.2.128/25, 0.0.0.0/1, 10.42.1.2/32]}\ncluster: {key_file: /nonexistent}\nstate_dir: " + dir + "\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", path}, &out, &errb); code != 2 {
		t.Fatalf("exit status: got %d, want 2 (stderr %q)", code, errb.String())
	}
	for _, want := range []string{
		"node.prefixes[2]: 0.0.0.0/1 is half of the default route",
		"node.prefixes[3]: 10.42.1.2/32 overlaps cluster.cidr 10.42.0.0/16",
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q does not contain %q", errb.String(), want)
		}
	}
	if strings.Contains(errb.String(), "node.prefixes[0]") {
		t.Errorf("stderr %q names node.prefixes[0] (100.64.0.0/24), which is fine", errb.String())
	}
}

// A prefix inside the underlay's connected subnet is refused by the daemon
// before it sets anything up, as a configuration error (exit 2).
func TestRunRefusesUnderlaySubnet(t *testing.T) {
	err := runCancelled(t, loopbackConfig(t, "100.64.0.0/24, 127.0.0.128/25"))
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("got %v, want a configuration error (exit 2)", err)
	}
	if want := "node.prefixes[1]: 127.0.0.128/25 overlaps the underlay subnet 127.0.0.0/8"; !strings.Contains(err.Error(), want) {
		t.Fatalf("got %q, want it to contain %q", err, want)
	}
}

// A second daemon on a state_dir in use is refused before it sets anything
// up, naming the directory and the holder.
func TestRunRefusesLockedStateDir(t *testing.T) {
	c := loopbackConfig(t, "100.64.0.0/24")
	l, err := statedir.Acquire(c.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	err = runCancelled(t, c)
	want := fmt.Sprintf("state_dir %s: in use by another drover daemon (held by PID %d)", c.StateDir, os.Getpid())
	if !errors.Is(err, statedir.ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	if errors.Is(err, config.ErrInvalid) {
		t.Fatalf("%v is a configuration error; want a runtime one (exit 1)", err)
	}
}

// A configuration holding manual keys that others can read stops
// `drover run` with status 2 and says how to fix it.
func TestRunRefusesReadableKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	y := `node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}
peers:
  - name: b
    underlay: 192.0.2.2
    prefixes: [10.42.2.0/24]
    sa:
      out: {spi: 0x0a01, key: "000102030405060708090a0b0c0d0e0fa0a1a2a3"}
      in:  {spi: 0x0b01, key: "101112131415161718191a1b1c1d1e1fb0b1b2b3"}
`
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", path}, &out, &errb); code != 2 {
		t.Fatalf("exit status: got %d, want 2 (stderr %q)", code, errb.String())
	}
	if want := "chmod 600 " + path; !strings.Contains(errb.String(), want) {
		t.Fatalf("stderr %q does not contain %q", errb.String(), want)
	}
}

// The daemon refuses at start the same too-broad prefixes that every other
// host refuses from a member (config at start, agent for gossip claims):
// one rule, checked here for every length.
func TestTooBroadAgrees(t *testing.T) {
	for bits := 0; bits <= 128; bits++ {
		for _, base := range []string{"10.0.0.0", "2001:db8::"} {
			a := netip.MustParseAddr(base)
			if bits > a.BitLen() {
				continue
			}
			p := netip.PrefixFrom(a, bits).Masked()
			min := config.MinPrefixBits4
			if a.Is6() {
				min = config.MinPrefixBits6
			}
			if got, want := agent.TooBroad(p), bits < min; got != want {
				t.Errorf("agent.TooBroad(%v): got %v, want %v (config refuses below /%d)", p, got, want, min)
			}
		}
	}
}

// run --check is systemd's ExecStartPre: valid files exit 0 having touched
// nothing (no state_dir created), bad ones 2 with the field named.
func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, []byte(strings.Repeat("ab", 32)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"valid", "node: {name: b, underlay: 192.0.2.2}\ncluster: {key_file: " + key + ", join: [192.0.2.1]}\nstate_dir: " + state + "\n", 0, "configuration is valid"},
		{"no key file", "node: {name: b, underlay: 192.0.2.2}\ncluster: {key_file: " + filepath.Join(dir, "none") + "}\n", 2, "cluster.key_file: gossip: key file: open"},
		{"key readable by others", "node: {name: b, underlay: 192.0.2.2}\ncluster: {key_file: " + loose + "}\n", 2, "mode 0644 lets group or others access it"},
		{"bad field", "node: {name: b, underlay: 192.0.2.300}\n", 2, "node.underlay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "drover.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if code := run([]string{"run", "--check", "--config", path}, &out, &errb); code != tc.code {
				t.Fatalf("exit status: got %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tc.want)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state_dir %s: got %v, want it not created by --check", state, err)
			}
		})
	}
}

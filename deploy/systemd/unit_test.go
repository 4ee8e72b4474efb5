package systemd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/testenv"
)

const (
	unitFile   = "drover.service"
	unitBinary = "/usr/local/bin/drover"
	unitConfig = "/etc/drover/drover.yaml"
)

// unit is the [Service] section of drover.service: key → values in order
// (a key may repeat, as ExecStartPre may).
type unit map[string][]string

func readUnit(t *testing.T) unit {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		case section == "Service":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", unitFile, line)
			}
			u[k] = append(u[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: [Service] %s: got %q, want exactly one", unitFile, key, u[key])
	}
	return u[key][0]
}

// verify runs systemd-analyze verify on a copy of the unit whose binary
// path is bin (verify checks that ExecStart's program exists and is
// executable; nothing else is changed). It returns what verify printed.
func verify(t *testing.T, text, bin string) (string, error) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze (Debian package systemd) is needed to check the unit: %v", err)
	}
	path := filepath.Join(t.TempDir(), unitFile)
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, unitBinary, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	return string(out), err
}

// The unit passes systemd-analyze verify with nothing to say: systemd 252
// exits 0 on unknown keys and bad values and only prints them, so any
// output is a failure. A unit with a misspelt key shows the check bites.
func TestUnitVerifies(t *testing.T) {
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	bin := testenv.DroverBinary(t)
	if out, err := verify(t, string(text), bin); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v, output %q; want success and no output", err, out)
	}
	bad := strings.Replace(string(text), "RestartPreventExitStatus=2", "RestartPreventExitStatus=2\nRestrictNamespace=yes", 1)
	if out, _ := verify(t, bad, bin); !strings.Contains(out, "Unknown key") {
		t.Fatalf("verify of a unit with a misspelt key printed %q; want an Unknown key warning", out)
	}
}

// What the unit promises, read from the file: readiness by sd_notify from
// the main process, no restart loop on a configuration error (exit 2, as
// `drover run --check` in ExecStartPre and the daemon report one), and no
// capability beyond the three drover uses.
func TestUnitSettings(t *testing.T) {
	u := readUnit(t)
	for _, tc := range []struct{ key, want string }{
		{"Type", "notify"},
		{"NotifyAccess", "main"},
		{"Restart", "on-failure"},
		{"RestartPreventExitStatus", "2"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectKernelTunables", "yes"},
		{"StateDirectory", "drover"},
		{"RuntimeDirectory", "drover"},
		{"ExecStart", unitBinary + " run --config " + unitConfig},
		{"ExecStartPre", unitBinary + " run --check --config " + unitConfig},
	} {
		if got := u.one(t, tc.key); got != tc.want {
			t.Errorf("[Service] %s: got %q, want %q", tc.key, got, tc.want)
		}
	}
	caps := strings.Fields(u.one(t, "CapabilityBoundingSet"))
	slices.Sort(caps)
	if want := []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}; !slices.Equal(caps, want) {
		t.Errorf("CapabilityBoundingSet: got %q, want %q", caps, want)
	}
}

// confined is the unit's confinement as far as it can be had without
// systemd as PID 1 (these machines have none): the capability bounding set
// and no_new_privs through setpriv, ProtectSystem=strict as a read-only
// root with the state and runtime directories (under dir) writable, and
// ProtectKernelTunables as a read-only /proc/sys, all in a private mount
// namespace inside the lab namespace ns.
func confined(ns, dir string, caps []string, env []string, argv ...string) *exec.Cmd {
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	script := `set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
shift
exec setpriv --no-new-privs --inh-caps -all --bounding-set "` + bounding + `" -- "$@"`
	args := append([]string{"netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", dir}, argv...)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// listenNotify is a NOTIFY_SOCKET: each datagram is one message.
func listenNotify(t *testing.T, path string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func waitMessage(t *testing.T, ch <-chan string, want string, d time.Duration) error {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return errors.New("notify socket closed")
			}
			if slices.Contains(strings.Split(m, "\n"), want) {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("no %s within %s", want, d)
		}
	}
}

// sandbox is a lab namespace with an underlay address and a drover
// configuration laid out as the unit expects it (state and runtime
// directories 0700, the cluster key 0600), under dir.
type sandbox struct {
	ns             *netnstest.NetNS
	dir, cfg, sock string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	ns := netnstest.New(t, "sd")
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "drv-ul0", "type", "veth", "peer", "name", "drv-ul1"}, // no dummy module on every kernel
		{"link", "set", "drv-ul1", "up"},
		{"addr", "add", "192.0.2.1/24", "dev", "drv-ul0"},
		{"link", "set", "drv-ul0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	// Not t.TempDir: its path is long, and a unix socket path is at most
	// 107 bytes.
	dir, err := os.MkdirTemp("", "drv-sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"state", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sandbox{ns: ns, dir: dir, cfg: filepath.Join(dir, "drover.yaml"), sock: filepath.Join(dir, "run", "drover.sock")}
	y := fmt.Sprintf(`node: {name: sd1, underlay: 192.0.2.1}
cluster: {key_file: %s, bootstrap: true}
state_dir: %s
control_socket: %s
`, key, filepath.Join(dir, "state"), s.sock)
	if err := os.WriteFile(s.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// command is one of the unit's Exec lines with the test's binary and
// configuration in place of /usr/local/bin/drover and /etc/drover/drover.yaml.
func (s *sandbox) command(line, bin string) []string {
	f := strings.Fields(line)
	for i, a := range f {
		switch a {
		case unitBinary:
			f[i] = bin
		case unitConfig:
			f[i] = s.cfg
		}
	}
	return f
}

func linkExists(ns, name string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", name).Run() == nil
}

// The daemon runs as the unit runs it: ExecStartPre passes, ExecStart under
// the unit's bounding set, no_new_privs, a read-only root and /proc/sys
// says READY=1 with its TUN device, nftables table and control socket up,
// answers drover status, and on SIGTERM (systemd's stop) says STOPPING=1,
// removes what it added and exits 0. Without CAP_NET_ADMIN in the same
// confinement it fails without READY=1: the emulation does confine.
func TestUnitRunsConfined(t *testing.T) {
	netnstest.NeedRoot(t)
	for _, tool := range []string{"setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux, mount) is needed: %v", tool, err)
		}
	}
	u := readUnit(t)
	caps := strings.Fields(u.one(t, "CapabilityBoundingSet"))
	bin := testenv.DroverBinary(t)

	t.Run("confinement holds", func(t *testing.T) {
		s := newSandbox(t)
		for _, argv := range [][]string{
			{"touch", "/var/tmp/drv-sd-probe"},
			{"sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
		} {
			if out, err := confined(s.ns.Name, s.dir, caps, nil, argv...).CombinedOutput(); err == nil {
				os.Remove("/var/tmp/drv-sd-probe")
				t.Errorf("%q succeeded in the confinement; want it refused (read-only)\n%s", argv, out)
			}
		}
		if out, err := confined(s.ns.Name, s.dir, caps, nil, "touch", filepath.Join(s.dir, "state", "probe")).CombinedOutput(); err != nil {
			t.Errorf("writing the state directory in the confinement: %v\n%s", err, out)
		}
	})

	t.Run("without NET_ADMIN", func(t *testing.T) {
		s := newSandbox(t)
		notify := filepath.Join(s.dir, "notify")
		ch := listenNotify(t, notify)
		fewer := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == "CAP_NET_ADMIN" })
		var out bytes.Buffer
		cmd := confined(s.ns.Name, s.dir, fewer, []string{"NOTIFY_SOCKET=" + notify}, s.command(u.one(t, "ExecStart"), bin)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("drover without CAP_NET_ADMIN exited 0; want a failure\n%s", out.String())
			}
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("drover without CAP_NET_ADMIN still running after 30 s\n%s", out.String())
		}
		select {
		case m := <-ch:
			t.Fatalf("drover without CAP_NET_ADMIN sent %q; want nothing", m)
		default:
		}
		t.Logf("without CAP_NET_ADMIN: %s", firstLine(out.String(), "level=ERROR", "drover:"))
	})

	s := newSandbox(t)
	pre := confined(s.ns.Name, s.dir, caps, nil, s.command(u.one(t, "ExecStartPre"), bin)...)
	if out, err := pre.CombinedOutput(); err != nil {
		t.Fatalf("ExecStartPre: %v\n%s", err, out)
	}
	notify := filepath.Join(s.dir, "notify")
	ch := listenNotify(t, notify)
	var out bytes.Buffer
	cmd := confined(s.ns.Name, s.dir, caps, []string{"NOTIFY_SOCKET=" + notify}, s.command(u.one(t, "ExecStart"), bin)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if err := waitMessage(t, ch, "READY=1", 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("READY=1 %s after start", time.Since(start).Round(time.Millisecond))
	// Ready means routing: the TUN, drover's nftables table and the
	// control socket exist when systemd starts the units after this one.
	if !linkExists(s.ns.Name, "drover0") {
		t.Errorf("READY=1 before the TUN device drover0 exists")
	}
	if b, err := exec.Command("ip", "netns", "exec", s.ns.Name, "nft", "list", "tables").CombinedOutput(); err != nil || !strings.Contains(string(b), "drover") {
		t.Errorf("READY=1 without drover's nftables table: nft list tables: %v %q", err, b)
	}
	st, err := exec.Command(bin, "status", "--socket", s.sock).CombinedOutput()
	if err != nil {
		t.Fatalf("drover status after READY=1: %v\n%s", err, st)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitMessage(t, ch, "STOPPING=1", 30*time.Second); err != nil {
		t.Errorf("%v\n%s", err, out.String())
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drover after SIGTERM: %v, want exit 0\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second): // the unit's TimeoutStopSec
		t.Fatalf("drover still running 30 s after SIGTERM\n%s", out.String())
	}
	if linkExists(s.ns.Name, "drover0") {
		t.Errorf("drover0 still exists after the daemon stopped")
	}
}

func firstLine(s string, markers ...string) string {
	for _, l := range strings.Split(s, "\n") {
		for _, m := range markers {
			if strings.Contains(l, m) {
				return l
			}
		}
	}
	return strings.TrimSpace(s)
}

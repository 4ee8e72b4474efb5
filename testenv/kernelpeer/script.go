package kernelpeer

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

//go:embed scripts/kernel-esp-peer.sh
var espScript []byte

//go:embed scripts/kernel-vxlan-peer.sh
var vxlanScript []byte

// Prefix starts every namespace and link name the peers create, the same
// as lab.Prefix (this package does not import testenv, so that it builds
// and its own tests run without the daemon's packages).
const Prefix = "drv-"

const (
	espScriptName   = "kernel-esp-peer.sh"
	vxlanScriptName = "kernel-vxlan-peer.sh"

	// DefaultRunBase is where run directories are created. Not /tmp or
	// /run: the UML kernel mounts its own tmpfs there and would not see
	// its run directory (the script hostfs-mounts that directory by path).
	DefaultRunBase = "/var/tmp"

	runDirPattern = Prefix + "kp-" // run directories: /var/tmp/drv-kp-*
	ownerFile     = "owner.pid"    // PID of the process that owns a run directory
	binDir        = "_bin"         // the scripts; "_" keeps it apart from peer names [a-z0-9]{1,8}

	upTimeout   = 2 * time.Minute // UML boots in ~6 s; the script itself gives up after 60 s per phase
	cmdTimeout  = 90 * time.Second
	downTimeout = 60 * time.Second
)

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// hiddenInUML are the mount points UML's init covers with its own file
// systems; a run directory below them is invisible to the UML kernel.
var hiddenInUML = []string{"/tmp", "/run", "/proc", "/sys", "/dev"}

var nameSeq atomic.Uint32

// UniqueName returns a peer name ([a-z0-9]{1,8}) made of tag (at most 2
// characters) and a suffix unique to this process, so two test processes
// never collide on the namespaces drv-NAME, drv-NAME-lan, drv-NAME-k.
func UniqueName(tag string) string {
	if len(tag) > 2 {
		tag = tag[:2]
	}
	pid := strconv.FormatUint(uint64(os.Getpid())%(36*36*36), 36)
	return fmt.Sprintf("%s%s%s", tag, pid, strconv.FormatUint(uint64(nameSeq.Add(1))%(36*36*36), 36))
}

// runRoot is one peer's private IP_RUNROOT: the scripts and their run
// directory live there, and Close removes it whole.
type runRoot struct {
	dir    string
	script string // absolute path of the script written into dir
}

func newRunRoot(base string, script []byte, name string) (*runRoot, error) {
	if base == "" {
		base = DefaultRunBase
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return nil, err
	}
	for _, h := range hiddenInUML {
		if base == h || strings.HasPrefix(base, h+"/") {
			return nil, fmt.Errorf("kernelpeer: run base %s is below %s, which the UML kernel covers with its own mount", base, h)
		}
	}
	if strings.ContainsAny(base, " \t\n") {
		return nil, fmt.Errorf("kernelpeer: run base %q contains white space (the scripts cannot quote it)", base)
	}
	dir, err := os.MkdirTemp(base, runDirPattern)
	if err != nil {
		return nil, fmt.Errorf("kernelpeer: run directory: %w", err)
	}
	// Searchable by UML's init (root inside UML, but keep it plain).
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := filepath.Join(dir, binDir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(p, script, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kernelpeer: write %s: %w", name, err)
	}
	return &runRoot{dir: dir, script: p}, nil
}

// run executes the script with args and returns stdout. On failure the error
// carries the tail of stderr (the script logs there).
func (r *runRoot) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.script, args...)
	cmd.Env = append(os.Environ(), "IP_PREFIX="+Prefix, "IP_RUNROOT="+r.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Own process group: on timeout the whole script dies, not just bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// The scripts detach UML/tcpdump with setsid and redirect their output,
	// but never wait forever on a pipe a stray child kept open.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(r.script), args[0], err, tail(stderr.String(), 25))
	}
	return stdout.Bytes(), nil
}

func (r *runRoot) remove() error { return os.RemoveAll(r.dir) }

// parseKV reads the KEY=VALUE lines the scripts print after `up`.
func parseKV(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && k != "" && !strings.ContainsAny(k, " \t") {
			kv[k] = v
		}
	}
	return kv
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// DoInNetNS runs fn on a fresh OS thread that has joined the named network
// namespace (e.g. an ESP peer's LAN namespace). As testenv.NetNS.Do, the
// thread is thrown away afterwards, and sockets fn opens stay in the
// namespace after DoInNetNS returns.
func DoInNetNS(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if e := netns.Set(h); e != nil {
			err = fmt.Errorf("enter netns %s: %w", name, e)
			return
		}
		err = fn()
	}()
	<-done
	return err
}

// Sweep tears down the peers of run directories under DefaultRunBase whose
// owning process is gone (a test binary killed before its cleanup ran): it
// runs the script's `down` for each peer, which stops the UML process it
// recorded and deletes the peer's namespaces, and removes the directory. Run
// directories of live processes are left alone. It returns the peers it
// removed.
func Sweep(ctx context.Context) []string {
	dirs, _ := filepath.Glob(filepath.Join(DefaultRunBase, runDirPattern+"*"))
	var gone []string
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		for _, s := range []struct{ script, prefix string }{{espScriptName, ""}, {vxlanScriptName, "vx-"}} {
			r := &runRoot{dir: dir, script: filepath.Join(dir, binDir, s.script)}
			if _, err := os.Stat(r.script); err != nil {
				continue
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				name, ok := strings.CutPrefix(e.Name(), s.prefix)
				if !e.IsDir() || !ok || !nameRE.MatchString(name) {
					continue
				}
				if s.prefix == "" && strings.HasPrefix(e.Name(), "vx-") {
					continue
				}
				if _, err := r.run(ctx, downTimeout, "down", "--name", name); err == nil {
					gone = append(gone, name)
				}
			}
		}
		os.RemoveAll(dir)
	}
	return gone
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

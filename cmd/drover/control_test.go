package main

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestControlSocketMode: the socket is 0600 and the directory made for it
// 0700 even with umask 0, and no one watching the path ever sees it with
// another mode.
func TestControlSocketMode(t *testing.T) {
	old := syscall.Umask(0) // the worst case: a socket bound now would be 0777
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "drover.sock")
	log := slog.New(slog.DiscardHandler)

	var wrong atomic.Value // the first mode seen that is not 0600
	for i := range 50 {
		stopWatch := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // a local user racing for the window
			defer wg.Done()
			for {
				select {
				case <-stopWatch:
					return
				default:
				}
				if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm() != 0o600 {
					wrong.CompareAndSwap(nil, fi.Mode().String())
				}
			}
		}()
		stop, err := serveControl(path, nil, nil, nil, nil, log)
		close(stopWatch)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("round %d: socket mode: got %v, want Srw------- (0600)", i, fi.Mode())
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("round %d: the owner cannot connect: %v", i, err)
		}
		c.Close()
		stop()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("round %d: after stop: got %v, want the socket removed", i, err)
		}
	}
	if w := wrong.Load(); w != nil {
		t.Fatalf("a watcher saw the socket with mode %v, want only 0600", w)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory made for the socket: got mode %o, want 700", perm)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left in %s: got %d entries (%s), want none", dir, len(ents), ents[0].Name())
	}
}

// TestControlSocketOtherUser: an unprivileged user who can reach the
// socket's directory still cannot connect. Root only: the client runs as
// nobody (65534).
func TestControlSocketOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user: sudo go test -run TestControlSocketOtherUser ./cmd/drover/")
	}
	// A directory anyone may enter, so that only the socket's mode can
	// stop the client; the test binary is copied there for it to run.
	dir, err := os.MkdirTemp("", "drv-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "drover.test")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "drover.sock")
	stop, err := serveControl(path, nil, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	cmd := exec.Command(bin, "-test.v", "-test.run=^TestControlDialHelper$")
	cmd.Env = append(os.Environ(), "DROVER_TEST_DIAL="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as nobody: %v\n%s", err, out)
	}
	if got := string(out); !strings.Contains(got, "dial refused: permission denied") {
		t.Fatalf("client as nobody: got %q, want it refused with permission denied", got)
	}
}

// TestControlDialHelper is the client of TestControlSocketOtherUser.
func TestControlDialHelper(t *testing.T) {
	path := os.Getenv("DROVER_TEST_DIAL")
	if path == "" {
		t.Skip("helper process of TestControlSocketOtherUser")
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		t.Log("dial succeeded")
		return
	}
	if errors.Is(err, syscall.EACCES) {
		t.Log("dial refused: permission denied")
		return
	}
	t.Fatalf("dial: %v", err)
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

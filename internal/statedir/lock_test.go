package statedir

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Two Locks on one directory in one process exclude each other (flock is
// per open file description); after Release the directory is free again.
func TestAcquireTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // Acquire creates it
	l1, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: got %v, %v; want mode 0700", fi, err)
	}
	l2, err := Acquire(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Acquire: got %v, %v; want ErrLocked", l2, err)
	}
	want := fmt.Sprintf("state_dir %s: in use by another drover daemon (held by PID %d)", dir, os.Getpid())
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %q, want it to start with %q", err, want)
	}
	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l1.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l3, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer l3.Release()
}

// A state_dir that cannot be created is an error naming it, not ErrLocked.
func TestAcquireNotADirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir); err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "state_dir "+dir) {
		t.Fatalf("got %v, want an error naming %s that is not ErrLocked", err, dir)
	}
}

// holderEnv makes the test binary a lock holder (TestHelperHolder).
const holderEnv = "DROVER_STATEDIR_HOLDER"

// TestHelperHolder is not a test: run by TestKilledHolder as a subprocess,
// it takes the lock, says so and waits to be killed.
func TestHelperHolder(t *testing.T) {
	dir := os.Getenv(holderEnv)
	if dir == "" {
		t.Skip("helper process for TestKilledHolder")
	}
	if _, err := Acquire(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	select {}
}

// A lock held by another process is refused with its PID; once that process
// is SIGKILLed the kernel drops the lock and the directory is free, though
// the file (with the dead PID) is still there.
func TestKilledHolder(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$")
	cmd.Env = append(os.Environ(), holderEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("holder said %q, %v; want \"locked\"", line, err)
	}

	_, err = Acquire(dir)
	if want := fmt.Sprintf("held by PID %d", cmd.Process.Pid); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("while held: got %v, want ErrLocked naming %q", err, want)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if b, err := os.ReadFile(filepath.Join(dir, LockFile)); err != nil || len(b) == 0 {
		t.Fatalf("lock file after the kill: %q, %v; want the dead holder's PID still in it", b, err)
	}
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	l.Release()
}

// A state_dir made wider by someone else (a hostPath the kubelet created
// 0755) is 0700 once the daemon holds it.
func TestAcquireTightens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // past the umask
		t.Fatal(err)
	}
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Fatalf("mode: got %o, want 700", got)
	}
}

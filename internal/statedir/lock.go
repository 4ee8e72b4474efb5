package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFile is the lock's name inside the state directory. It holds the PID
// of the daemon that has the directory, for the error a second one prints.
const LockFile = "lock"

// ErrLocked: another process holds the directory (errors.Is).
var ErrLocked = errors.New("in use by another drover daemon")

// Lock is a held state directory. The lock is an flock(2) on LockFile: the
// kernel drops it when the holder's last descriptor closes, so a daemon that
// crashed or was killed leaves nothing that stops the next one. It is taken
// on an open file description, so two Locks on one directory exclude each
// other within one process too.
type Lock struct {
	f *os.File
}

// Acquire creates dir (0700) if needed and takes its lock without waiting.
// When another process holds it, the error wraps ErrLocked and names the
// directory and, when the holder has written it, the holder's PID.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	// os.OpenFile opens with O_CLOEXEC: no child inherits the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: lock: %w", dir, err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state_dir %s: %w (%s); stop it first, or give this daemon its own state_dir", dir, ErrLocked, holder(f))
		}
		return nil, fmt.Errorf("state_dir %s: lock %s: %w", dir, path, err)
	}
	// Ours: record who holds it. A failure here only loses the PID in
	// another daemon's error message, but it means the directory is not
	// writable, which everything after would trip over: report it now.
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("state_dir %s: lock %s: %w", dir, path, err)
	}
	// Ours now: make it 0700 if something else made it wider (the kubelet
	// creates a DaemonSet's hostPath 0755). The files in it are 0600, but
	// their names and sizes would show others the pinned nodes and when
	// keys change.
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			f.Close()
			return nil, fmt.Errorf("state_dir %s: mode %o, and chmod 700 failed: %w", dir, fi.Mode().Perm(), err)
		}
	}
	return &Lock{f: f}, nil
}

// Release empties the lock file and drops the lock. It may be called more
// than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Truncate(0) // no stale PID for a reader to blame
	if cerr := l.f.Close(); err == nil {
		err = cerr // closing the last descriptor drops the flock
	}
	l.f = nil
	return err
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = unix.Flock(int(fd), how) }); err != nil {
		return err
	}
	return ferr
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// holder describes the process that holds f's lock, from the PID it wrote.
func holder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return "holder's PID not recorded yet"
	}
	return "held by PID " + strconv.Itoa(pid)
}

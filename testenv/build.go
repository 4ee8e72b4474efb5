// Package testenv is what the tests of every package share: the drover
// binary built from this module (native and cross-architecture, for the
// lab's foreign hosts), and named network namespaces removed when the test
// ends. The lab itself is package lab, which the product links; this
// package runs the Go toolchain and imports testing, so only tests import
// it. It imports nothing of drover's own beyond internal/netnstest, so the
// lab's tests can import it.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var build struct {
	once sync.Once
	path string
	err  error
}

// BuildDrover builds ./cmd/drover of this module once per process into a
// temporary directory and returns the binary's path. Tests use it; `drover
// lab` passes its own executable instead.
func BuildDrover() (string, error) {
	build.once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			build.err = errors.New("testenv: cannot locate the module")
			return
		}
		root := filepath.Dir(filepath.Dir(file))
		// One directory for every test process; each builds its own
		// binary named by PID and removes those of processes that are gone.
		dir := filepath.Join(os.TempDir(), "drv-bin")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			build.err = err
			return
		}
		removeStaleBinaries(dir)
		out := filepath.Join(dir, fmt.Sprintf("drover-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", out, "./cmd/drover")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/drover: %w\n%s", err, b)
			return
		}
		build.path = out
	})
	return build.path, build.err
}

// removeStaleBinaries deletes drover-PID binaries whose process has exited.
func removeStaleBinaries(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "drover-%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// DroverBinary is BuildDrover for tests.
func DroverBinary(t testing.TB) string {
	t.Helper()
	p, err := BuildDrover()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var archBuilds struct {
	mu    sync.Mutex
	paths map[string]string
}

// BuildDroverArch cross-builds ./cmd/drover for goarch (CGO off) once per
// process, next to BuildDrover's binary, as drover-PID-GOARCH (removed
// with the others once this process is gone).
func BuildDroverArch(goarch string) (string, error) {
	if goarch == "" || goarch == runtime.GOARCH {
		return BuildDrover()
	}
	archBuilds.mu.Lock()
	defer archBuilds.mu.Unlock()
	if p, ok := archBuilds.paths[goarch]; ok {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("testenv: cannot locate the module")
	}
	root := filepath.Dir(filepath.Dir(file))
	dir := filepath.Join(os.TempDir(), "drv-bin")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	out := filepath.Join(dir, fmt.Sprintf("drover-%d-%s", os.Getpid(), goarch))
	cmd := exec.Command("go", "build", "-o", out, "./cmd/drover")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("GOARCH=%s go build ./cmd/drover: %w\n%s", goarch, err, b)
	}
	if archBuilds.paths == nil {
		archBuilds.paths = map[string]string{}
	}
	archBuilds.paths[goarch] = out
	return out, nil
}

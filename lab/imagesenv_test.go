package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

// Images the kube helpers import into every containerd (StartContainerd):
// built locally by lab/internal/mkimages, no registry involved.
const (
	// PauseImage is the pod sandbox image containerd's CRI is configured
	// with: a static program that waits for SIGTERM.
	PauseImage = "registry.k8s.io/pause:3.10"
	// BusyboxImage holds Debian's static busybox with sh, sleep, ping, nc,
	// ip, ifconfig, cat and wget in /bin. Pods must use it with
	// imagePullPolicy: Never.
	BusyboxImage = "drover.test/busybox:1.35"
)

var images struct {
	once sync.Once
	dir  string // pause.tar, busybox.tar
	err  error
}

// moduleRoot is the directory of this module (testenv's parent).
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("lab: cannot locate the module")
	}
	return filepath.Dir(filepath.Dir(file)), nil
}

// BuildImages writes the image tars once per process, into
// $TMPDIR/drv-bin/images-PID (those of processes that are gone are
// removed), and returns that directory: pause.tar (PauseImage) and
// busybox.tar (BusyboxImage). It builds lab/internal/pause (static) and
// runs lab/internal/mkimages, which packs Debian's /bin/busybox
// (busybox-static).
func BuildImages() (string, error) {
	images.once.Do(func() {
		images.dir, images.err = buildImages()
	})
	return images.dir, images.err
}

func buildImages() (string, error) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return "", fmt.Errorf("/bin/busybox: %w (apt-get install busybox-static)", err)
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	base := filepath.Join(os.TempDir(), "drv-bin")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", err
	}
	removeStaleImageDirs(base)
	dir := filepath.Join(base, fmt.Sprintf("images-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	pause, mk := filepath.Join(dir, "pause"), filepath.Join(dir, "mkimages")
	for _, b := range [][2]string{{pause, "./lab/internal/pause"}, {mk, "./lab/internal/mkimages"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", b[0], b[1])
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", b[1], err, out)
		}
	}
	if _, err := runOut("", mk, "-pause", pause, "-busybox", "/bin/busybox", "-out", dir); err != nil {
		return "", err
	}
	return dir, nil
}

// removeStaleImageDirs deletes images-PID directories whose process has
// exited.
func removeStaleImageDirs(base string) {
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		var pid int
		if !strings.HasPrefix(e.Name(), "images-") {
			continue
		}
		if _, err := fmt.Sscanf(e.Name(), "images-%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// Command mkimages writes the kube tests' container images as docker-archive
// tars (`ctr images import` reads them), so that no registry is needed:
//
//	registry.k8s.io/pause:3.10   /pause, the static program of ../pause
//	drover.test/busybox:1.35     Debian's static /bin/busybox with the
//	                             applets the tests use linked in /bin
//
// It is a program of its own, run by the tests, so that
// go-containerregistry stays out of every binary of drover.
//
//	mkimages -pause PAUSE_BINARY -busybox /bin/busybox -out DIR
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/drovernet/drover/internal/ociimage"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image names, as the tests and the containerd configuration use them.
const (
	PauseImage   = "registry.k8s.io/pause:3.10"
	BusyboxImage = "drover.test/busybox:1.35"
)

// Applets linked to busybox in the test image's /bin.
var applets = []string{"sh", "sleep", "ping", "nc", "ip", "ifconfig", "cat", "wget",
	"echo", "ls", "hostname", "true", "false", "test", "kill"}

func main() {
	pause := flag.String("pause", "", "the pause binary (static)")
	busybox := flag.String("busybox", "/bin/busybox", "a static busybox binary")
	out := flag.String("out", ".", "directory for pause.tar and busybox.tar")
	flag.Parse()
	if *pause == "" {
		fmt.Fprintln(os.Stderr, "mkimages: -pause is required")
		os.Exit(2)
	}
	if err := run(*pause, *busybox, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimages:", err)
		os.Exit(1)
	}
}

func run(pause, busybox, out string) error {
	p, err := os.ReadFile(pause)
	if err != nil {
		return fmt.Errorf("pause binary: %w", err)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("busybox binary (Debian: apt-get install busybox-static): %w", err)
	}
	var pl ociimage.Layer
	pl.File("pause", p, 0o755)
	if err := write(filepath.Join(out, "pause.tar"), PauseImage, &pl, v1.Config{Entrypoint: []string{"/pause"}}); err != nil {
		return err
	}
	var bl ociimage.Layer
	for _, d := range []string{"bin", "etc", "tmp", "root", "proc", "sys", "dev"} {
		bl.Dir(d, 0o755)
	}
	bl.File("bin/busybox", b, 0o755)
	for _, a := range applets {
		bl.Symlink("bin/"+a, "busybox")
	}
	bl.File("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	bl.File("etc/group", []byte("root:x:0:\n"), 0o644)
	return write(filepath.Join(out, "busybox.tar"), BusyboxImage, &bl,
		v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}})
}

// write packs one layer into an image tagged ref, for this machine's
// architecture, and writes it as a docker-archive tar.
func write(path, ref string, l *ociimage.Layer, cfg v1.Config) error {
	img, err := l.Image(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return errors.Join(fmt.Errorf("%s: write %s: %w", ref, path, err), os.Remove(path))
	}
	return nil
}

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
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
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

// epoch dates every file, so that the same inputs give the same image.
var epoch = time.Unix(0, 0).UTC()

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
	var pl layer
	pl.file("pause", p, 0o755)
	if err := write(filepath.Join(out, "pause.tar"), PauseImage, pl, v1.Config{Entrypoint: []string{"/pause"}}); err != nil {
		return err
	}
	var bl layer
	for _, d := range []string{"bin", "etc", "tmp", "root", "proc", "sys", "dev"} {
		bl.dir(d)
	}
	bl.file("bin/busybox", b, 0o755)
	for _, a := range applets {
		bl.symlink("bin/"+a, "busybox")
	}
	bl.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	bl.file("etc/group", []byte("root:x:0:\n"), 0o644)
	return write(filepath.Join(out, "busybox.tar"), BusyboxImage, bl,
		v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}})
}

// layer is an uncompressed layer tar being built.
type layer struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func (l *layer) add(h *tar.Header, body []byte) {
	if l.tw == nil {
		l.tw = tar.NewWriter(&l.buf)
	}
	if l.err != nil {
		return
	}
	h.ModTime = epoch
	if l.err = l.tw.WriteHeader(h); l.err == nil && body != nil {
		_, l.err = l.tw.Write(body)
	}
}

func (l *layer) dir(name string) {
	l.add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}, nil)
}

func (l *layer) file(name string, body []byte, mode int64) {
	l.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body)
}

func (l *layer) symlink(name, target string) {
	l.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

// write packs one layer into an image tagged ref, for this machine's
// architecture, and writes it as a docker-archive tar.
func write(path, ref string, l layer, cfg v1.Config) error {
	if l.err == nil && l.tw != nil {
		l.err = l.tw.Close()
	}
	if l.err != nil {
		return fmt.Errorf("%s: layer: %w", ref, l.err)
	}
	data := l.buf.Bytes()
	ly, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return fmt.Errorf("%s: layer: %w", ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, ly)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("%s: config: %w", ref, err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = runtime.GOARCH, "linux", v1.Time{Time: epoch}
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("%s: config: %w", ref, err)
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

package build

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/drovernet/drover/internal/ociimage"
)

// Paths inside the image. The binary is where deploy/kubernetes and
// docs/install.md expect it; the conflists are what `drover install-cni`
// installs from the image (docs/install.md#the-image).
const (
	ImageBinary    = "/usr/local/bin/drover"
	ImageConfig    = "/etc/drover/drover.yaml"
	ImageConflists = "/usr/share/drover/cni"
)

// conflists are the examples shipped in the image, from the repository's
// examples/ directory.
var conflists = []string{"drover.conflist", "drover-flat.conflist"}

// ImageRef is the image's name: drover:VERSION or drover-full:VERSION,
// with characters a tag cannot hold (a "+" in a version) replaced by "-".
func ImageRef(f Flavour, version string) string {
	tag := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(version, "-")
	if tag == "" || !regexp.MustCompile(`^[A-Za-z0-9_]`).MatchString(tag) {
		tag = "v" + tag
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return f.Name() + ":" + tag
}

// ImageArchiveName is the oci-archive's file name for a flavour.
func ImageArchiveName(f Flavour) string { return f.Name() + "-image.oci.tar" }

// Image is the container image of one built binary: the binary, the
// example conflists, and the directories the daemon uses, nothing else (no
// base image, no shell). Its entrypoint is drover; the default command
// runs the daemon on /etc/drover/drover.yaml, which the operator mounts.
func Image(a Artifact, root string) (v1.Image, error) {
	bin, err := os.ReadFile(a.Path)
	if err != nil {
		return nil, err
	}
	var l ociimage.Layer
	for _, d := range []string{"etc", "etc/drover", "usr", "usr/local", "usr/local/bin", "usr/share", "usr/share/drover", "usr/share/drover/cni", "var", "var/lib", "run"} {
		l.Dir(d, 0o755)
	}
	// state_dir and control_socket defaults: private, as the daemon makes them.
	l.Dir("var/lib/drover", 0o700)
	l.Dir("run/drover", 0o700)
	l.Dir("tmp", 0o1777)
	l.File(strings.TrimPrefix(ImageBinary, "/"), bin, 0o755)
	for _, c := range conflists {
		b, err := os.ReadFile(filepath.Join(root, "examples", c))
		if err != nil {
			return nil, err
		}
		l.File(strings.TrimPrefix(ImageConflists, "/")+"/"+c, b, 0o644)
	}
	p := a.Target.Platform
	return l.Image(v1.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant}, v1.Config{
		Entrypoint: []string{ImageBinary},
		Cmd:        []string{"run", "--config", ImageConfig},
		Env:        []string{"PATH=/usr/local/bin"},
		StopSignal: "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title":   a.Target.Flavour.Name(),
			"org.opencontainers.image.version": a.Target.Version,
		},
	})
}

// WriteImage writes the multi-platform image of arts (one flavour, one
// binary per platform) as an oci-archive at path, named ref.
func WriteImage(path, ref, root string, arts []Artifact) error {
	var imgs []v1.Image
	for _, a := range arts {
		img, err := Image(a, root)
		if err != nil {
			return fmt.Errorf("image %s: %w", a.Target.FileName(), err)
		}
		imgs = append(imgs, img)
	}
	idx, err := ociimage.Index(imgs...)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "layout")
	if err := ociimage.WriteLayout(dir, ref, idx); err != nil {
		return err
	}
	return ociimage.WriteArchive(path, dir)
}

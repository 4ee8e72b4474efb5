// Package ociimage builds container images from files on disk, with no
// registry, no base image and no container daemon: a layer is a tar built
// in memory, an image is that layer with a config, and a multi-platform
// index is written as an OCI image layout or an oci-archive tar (what
// `podman load` and `ctr images import` read). Every file is dated at the
// epoch, so the same inputs give the same digests.
//
// Only tools link it (tools/release, the lab's image maker): it brings
// go-containerregistry, which the drover binary does without.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch dates every file and image.
var Epoch = time.Unix(0, 0).UTC()

// RefNameAnnotation is the OCI annotation that names an image in a layout's
// index.json (OCI image-spec, annotations.md); podman load tags the image
// with it.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Layer is an uncompressed layer tar being built. The zero value is empty
// and ready; the first error sticks and is returned by Image.
type Layer struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func (l *Layer) add(h *tar.Header, body []byte) {
	if l.tw == nil {
		l.tw = tar.NewWriter(&l.buf)
	}
	if l.err != nil {
		return
	}
	h.ModTime = Epoch
	if l.err = l.tw.WriteHeader(h); l.err == nil && body != nil {
		_, l.err = l.tw.Write(body)
	}
}

// Dir adds a directory (name without a leading slash).
func (l *Layer) Dir(name string, mode int64) {
	l.add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil)
}

// File adds a regular file.
func (l *Layer) File(name string, body []byte, mode int64) {
	l.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body)
}

// Symlink adds a symbolic link.
func (l *Layer) Symlink(name, target string) {
	l.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

// Image is the layer as the only layer of an image for platform p, with
// the given runtime config.
func (l *Layer) Image(p v1.Platform, cfg v1.Config) (v1.Image, error) {
	if l.err == nil && l.tw != nil {
		l.err = l.tw.Close()
	}
	if l.err != nil {
		return nil, fmt.Errorf("layer: %w", l.err)
	}
	data := l.buf.Bytes()
	ly, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, ly)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = cfg
	// OCI media types throughout: a docker v2 manifest cannot carry an
	// ARM variant in an OCI index's platform the same way.
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.ConfigFile(img, cf)
}

// Index is a multi-platform image index of images, each described with its
// config's platform (os, architecture, variant).
func Index(images ...v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, img := range images {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// WriteLayout writes idx as an OCI image layout in dir (which must not
// exist), named ref in index.json.
func WriteLayout(dir, ref string, idx v1.ImageIndex) error {
	if _, err := name.ParseReference(ref); err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s exists; want a new directory", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{RefNameAnnotation: ref})); err != nil {
		return errors.Join(err, os.RemoveAll(dir))
	}
	return nil
}

// WriteArchive writes the OCI layout in dir as an oci-archive tar at path
// (the layout's files, paths relative to it), via a temporary file renamed
// into place.
func WriteArchive(path, dir string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".oci-archive-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	tw := tar.NewWriter(tmp)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: Epoch})
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b)), ModTime: Epoch}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

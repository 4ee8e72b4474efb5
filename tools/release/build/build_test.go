package build

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drovernet/drover/internal/ociimage"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestParsePlatform(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Platform
		ok   bool
	}{
		{"linux/amd64", Platform{OS: "linux", Arch: "amd64"}, true},
		{"linux/arm64", Platform{OS: "linux", Arch: "arm64"}, true},
		{"linux/arm/v7", Platform{OS: "linux", Arch: "arm", Variant: "v7"}, true},
		{"linux/arm", Platform{}, false},
		{"darwin/arm64", Platform{}, false},
		{"linux/mips", Platform{}, false},
	} {
		got, err := ParsePlatform(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePlatform(%q): got %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("String: got %q, want %q", got.String(), tc.in)
		}
	}
}

func TestArgs(t *testing.T) {
	arm := Target{Platform: Platform{OS: "linux", Arch: "arm", Variant: "v7"}, Flavour: Edge, Version: "v1.2.3"}
	args, env := arm.Args("/out/x", true)
	for _, want := range []string{"-trimpath", "-buildvcs=true", "-tags=nokube,nobgp", "-ldflags=-s -w -X main.version=v1.2.3",
		"-gcflags=all=-l", "-gcflags=github.com/drovernet/drover/router/...=", "./cmd/drover"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q: missing %q", args, want)
		}
	}
	// The hot packages' patterns must come after all=-l: the last
	// matching pattern wins.
	if i, j := slices.Index(args, "-gcflags=all=-l"), slices.Index(args, "-gcflags=runtime="); i > j {
		t.Errorf("-gcflags=all=-l at %d after runtime's at %d", i, j)
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=7"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %q: missing %q", env, want)
		}
	}
	full := Target{Platform: Platform{OS: "linux", Arch: "amd64"}, Flavour: Full, Version: "v1", Unstripped: true}
	args, _ = full.Args("/out/y", false)
	for _, a := range args {
		if strings.HasPrefix(a, "-tags") || strings.Contains(a, "-s -w") {
			t.Errorf("full unstripped build: unexpected %q", a)
		}
	}
	if got, want := full.FileName(), "drover-full-linux-amd64"; got != want {
		t.Errorf("FileName: got %q, want %q", got, want)
	}
	if got, want := arm.FileName(), "drover-linux-arm-v7"; got != want {
		t.Errorf("FileName: got %q, want %q", got, want)
	}
}

// TestEdgeRelease builds the amd64 edge release as tools/release does:
// stripped, it must be at most 12 MiB; unstripped, its symbol table must
// hold nothing of package testing (the lab is in the product, its tests
// are not); and it must say its version.
func TestEdgeRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds drover twice (skipped with -short)")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	amd64 := Platform{OS: "linux", Arch: "amd64"}
	rel, err := Build(root, dir, Target{Platform: amd64, Flavour: Edge, Version: "v0.0.0-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (%.2f MiB)", filepath.Base(rel.Path), rel.Size, float64(rel.Size)/(1<<20))
	if rel.Size > EdgeMaxAMD64 {
		t.Errorf("amd64 edge release: got %d bytes, want at most %d (12 MiB)", rel.Size, EdgeMaxAMD64)
	}
	out, err := exec.Command(rel.Path, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("drover version: %v\n%s", err, out)
	}
	for _, want := range []string{"drover v0.0.0-test\n", "go:       go", "linux/amd64", "features: none", "aes-gcm:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("drover version: got\n%s\nwant it to contain %q", out, want)
		}
	}

	sub := filepath.Join(dir, "unstripped")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	syms, err := Build(root, sub, Target{Platform: amd64, Flavour: Edge, Version: "v0.0.0-test", Unstripped: true})
	if err != nil {
		t.Fatal(err)
	}
	nm, err := exec.Command("go", "tool", "nm", syms.Path).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	var n, bad int
	for line := range strings.Lines(string(nm)) {
		n++
		f := strings.Fields(line)
		if len(f) >= 3 && (strings.HasPrefix(f[len(f)-1], "testing.") || strings.Contains(f[len(f)-1], "/testenv.")) {
			bad++
			if bad <= 5 {
				t.Errorf("symbol of package testing or testenv: %s", strings.TrimSpace(line))
			}
		}
	}
	if n < 1000 {
		t.Fatalf("go tool nm listed %d symbols: not a symbol table", n)
	}
	t.Logf("%d symbols, %d of package testing or testenv", n, bad)
}

// The image archive holds one index with a manifest per platform (the ARM
// variant in its platform), each image the binary for that platform, the
// shipped conflists and nothing to pull, named for podman load.
func TestWriteImage(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var arts []Artifact
	for _, s := range Platforms {
		p, err := ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		tg := Target{Platform: p, Flavour: Edge, Version: "v1.2.3+dirty"}
		path := filepath.Join(dir, tg.FileName())
		if err := os.WriteFile(path, []byte("binary for "+s), 0o755); err != nil {
			t.Fatal(err)
		}
		arts = append(arts, Artifact{Target: tg, Path: path})
	}
	ref := ImageRef(Edge, "v1.2.3+dirty")
	if ref != "drover:v1.2.3-dirty" {
		t.Errorf("ImageRef: got %q, want drover:v1.2.3-dirty", ref)
	}
	archive := filepath.Join(dir, ImageArchiveName(Edge))
	if err := WriteImage(archive, ref, root, arts); err != nil {
		t.Fatal(err)
	}
	// Unpack the archive and read it back as an OCI layout.
	layoutDir := filepath.Join(dir, "layout")
	if out, err := exec.Command("tar", "-C", dir, "--one-top-level=layout", "-xf", archive).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	lp, err := layout.FromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations[ociimage.RefNameAnnotation] != ref || tm.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json: got %+v, want one OCI index named %s", tm.Manifests, ref)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range im.Manifests {
		plat := m.Platform.OS + "/" + m.Platform.Architecture
		if m.Platform.Variant != "" {
			plat += "/" + m.Platform.Variant
		}
		got = append(got, plat)
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != m.Platform.Architecture || cf.Variant != m.Platform.Variant {
			t.Errorf("%s: config says %s/%s", plat, cf.Architecture, cf.Variant)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{ImageBinary}) || !slices.Equal(cf.Config.Cmd, []string{"run", "--config", ImageConfig}) {
			t.Errorf("%s: entrypoint %q cmd %q", plat, cf.Config.Entrypoint, cf.Config.Cmd)
		}
		files := map[string]string{}
		ls, err := img.Layers()
		if err != nil || len(ls) != 1 {
			t.Fatalf("%s: layers %d, %v; want 1 (no base image)", plat, len(ls), err)
		}
		rc, err := ls[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			files["/"+strings.TrimSuffix(h.Name, "/")] = string(b)
		}
		rc.Close()
		if files[ImageBinary] != "binary for "+plat {
			t.Errorf("%s: %s holds %q, want that platform's binary", plat, ImageBinary, files[ImageBinary])
		}
		for _, c := range conflists {
			if _, ok := files[ImageConflists+"/"+c]; !ok {
				t.Errorf("%s: no %s/%s", plat, ImageConflists, c)
			}
		}
	}
	if !slices.Equal(got, Platforms) {
		t.Errorf("platforms: got %q, want %q", got, Platforms)
	}
}

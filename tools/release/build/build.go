// Package build knows how drover's release binaries are built: platforms,
// flavours, flags. tools/release runs it; its test checks what a release
// must be (size, no package testing, version stamped).
package build

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EdgeMaxAMD64 is issue 15's limit for the amd64 edge binary: 12 MiB.
const EdgeMaxAMD64 = 12 << 20

// Platforms are the release's platforms, as OCI writes them.
var Platforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}

// Platform is GOOS/GOARCH, and the ARM version for GOARCH=arm.
type Platform struct {
	OS, Arch, Variant string // Variant: "v7" for arm (GOARM=7), else ""
}

// ParsePlatform reads "linux/amd64" or "linux/arm/v7".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	switch {
	case len(parts) == 2 && parts[0] == "linux" && (parts[1] == "amd64" || parts[1] == "arm64"):
		return Platform{OS: parts[0], Arch: parts[1]}, nil
	case len(parts) == 3 && parts[0] == "linux" && parts[1] == "arm" && (parts[2] == "v6" || parts[2] == "v7"):
		return Platform{OS: parts[0], Arch: parts[1], Variant: parts[2]}, nil
	}
	return Platform{}, fmt.Errorf("platform %q: want one of %s", s, strings.Join(Platforms, ", "))
}

func (p Platform) String() string {
	if p.Variant != "" {
		return p.OS + "/" + p.Arch + "/" + p.Variant
	}
	return p.OS + "/" + p.Arch
}

// Flavour is which optional parts a binary links.
type Flavour int

const (
	// Edge leaves out the Kubernetes datastore (client-go) and BGP
	// (GoBGP): the overlay, cluster mode, CNI, network policy from a file,
	// the uplink model, direct routing and the lab stay.
	Edge Flavour = iota
	// Full has everything.
	Full
)

// ParseFlavour reads "edge" or "full".
func ParseFlavour(s string) (Flavour, error) {
	switch s {
	case "edge":
		return Edge, nil
	case "full":
		return Full, nil
	}
	return 0, fmt.Errorf("flavour %q: want edge or full", s)
}

// Name is the binary's name: drover or drover-full.
func (f Flavour) Name() string {
	if f == Full {
		return "drover-full"
	}
	return "drover"
}

// Tags are the build tags.
func (f Flavour) Tags() string {
	if f == Full {
		return ""
	}
	return "nokube,nobgp"
}

// Target is one binary to build.
type Target struct {
	Platform Platform
	Flavour  Flavour
	Version  string
	// Unstripped keeps the symbol table (-s -w off), so tests can read it
	// with go tool nm; releases are stripped.
	Unstripped bool
}

// FileName is NAME-OS-ARCH[-VARIANT], e.g. drover-linux-arm-v7.
func (t Target) FileName() string {
	n := t.Flavour.Name() + "-" + t.Platform.OS + "-" + t.Platform.Arch
	if t.Platform.Variant != "" {
		n += "-" + t.Platform.Variant
	}
	return n
}

// hotPackages keep the compiler's inlining; every other package is built
// with -l. Inlining matters on the packet path (the router, ESP and VXLAN,
// the TUN poller, AES-GCM and ChaCha20-Poly1305, the runtime, syscalls,
// netip) and nowhere else: in the cold code (configuration, gossip,
// nftables and netlink set-up, HTTP, the CNI plugin, the lab) it only
// costs size, about 1 MB of the edge binary, which is what brings it
// under 12 MiB. docs/benchmarks.md has the throughput of both builds.
var hotPackages = []string{
	"runtime", "runtime/...", "internal/...", "sync", "sync/...", "syscall", "time", "os", "net", "net/netip",
	"math/bits", "encoding/binary", "crypto/...", "golang.org/x/crypto/...", "golang.org/x/sys/...",
	"github.com/drovernet/drover/router/...", "github.com/drovernet/drover/crypto/...",
	"github.com/drovernet/drover/tun/...", "github.com/drovernet/drover/internal/ratelog",
}

// Args is the go build command line (after "go") and the environment
// additions for t, writing to out.
func (t Target) Args(out string, vcs bool) (args, env []string) {
	ldflags := "-X main.version=" + t.Version
	if !t.Unstripped {
		ldflags = "-s -w " + ldflags
	}
	args = []string{"build", "-trimpath", fmt.Sprintf("-buildvcs=%t", vcs), "-o", out, "-ldflags=" + ldflags}
	if tags := t.Flavour.Tags(); tags != "" {
		args = append(args, "-tags="+tags)
	}
	args = append(args, "-gcflags=all=-l")
	for _, p := range hotPackages {
		// The last matching pattern wins (go help build): these undo -l.
		args = append(args, "-gcflags="+p+"=")
	}
	args = append(args, "./cmd/drover")
	env = []string{"CGO_ENABLED=0", "GOOS=" + t.Platform.OS, "GOARCH=" + t.Platform.Arch}
	if t.Platform.Variant != "" {
		env = append(env, "GOARM="+strings.TrimPrefix(t.Platform.Variant, "v"))
	}
	return args, env
}

// Artifact is a built binary.
type Artifact struct {
	Target Target
	Path   string
	Size   int64
	SHA256 string
}

// Build builds t from the module at root into dir.
func Build(root, dir string, t Target) (Artifact, error) {
	out, err := filepath.Abs(filepath.Join(dir, t.FileName()))
	if err != nil {
		return Artifact{}, err
	}
	_, statErr := os.Stat(filepath.Join(root, ".git"))
	args, env := t.Args(out, statErr == nil)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return Artifact{}, fmt.Errorf("%s: go %s: %w\n%s", t.FileName(), strings.Join(args, " "), err, b)
	}
	a, err := Sum(out)
	a.Target = t
	return a, err
}

// Sum is the file at path as an artifact: size and SHA-256.
func Sum(path string) (Artifact, error) {
	a := Artifact{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return Artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	if a.Size, err = io.Copy(h, f); err != nil {
		return Artifact{}, err
	}
	a.SHA256 = hex.EncodeToString(h.Sum(nil))
	return a, nil
}

// WriteSums writes path in sha256sum(1)'s format.
func WriteSums(path string, arts []Artifact) error {
	var b bytes.Buffer
	for _, a := range arts {
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256, filepath.Base(a.Path))
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// ModuleRoot is the directory of drover's go.mod.
func ModuleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside drover's module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// GitVersion is `git describe --tags --always --dirty` in root, or "dev"
// outside a git checkout.
func GitVersion(root string) string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(b))
}

package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/drovernet/drover/cni"
	"github.com/drovernet/drover/internal/durable"
)

// Defaults: the host's CNI directories as the DaemonSet mounts them
// (hostPath /opt/cni/bin at /host/opt/cni/bin, /etc/cni/net.d at
// /host/etc/cni/net.d), and a name that sorts before most other
// providers' configs (runtimes use the first one in lexical order).
const (
	DefaultBinDir  = "/host/opt/cni/bin"
	DefaultConfDir = "/host/etc/cni/net.d"
	DefaultName    = "10-drover.conflist"
)

// Modes of what is installed: the binary is executed by the runtime (root),
// the conflist read by it; neither holds a secret.
const (
	BinaryMode   os.FileMode = 0o755
	ConflistMode os.FileMode = 0o644
)

// maxConflist bounds the conflist read: a network config is a few hundred
// bytes; anything near this is not one.
const maxConflist = 1 << 20

// Options says what to install where.
type Options struct {
	// Binary is the plugin binary to copy: the running drover
	// (os.Executable) in `drover install-cni`.
	Binary string
	// Conflist is the network configuration list to install.
	Conflist []byte
	// BinDir is the runtime's CNI binary directory; the binary becomes
	// BinDir/drover. It must exist. Default DefaultBinDir.
	BinDir string
	// ConfDir is the runtime's CNI config directory. It must exist.
	// Default DefaultConfDir.
	ConfDir string
	// Name is the conflist's file name in ConfDir, ending in .conflist
	// (runtimes load .conf files as single plugins). Default DefaultName.
	Name string
	// Log receives what changed and warnings; nil discards them.
	Log *slog.Logger
}

// Result says what Install changed.
type Result struct {
	BinaryPath, ConflistPath       string
	BinaryChanged, ConflistChanged bool
	Chained                        []string // plugin types other than drover, found in BinDir
	Shadowed                       []string // configs in ConfDir that sort before Name
}

// ErrWrite marks a failure to read the binary or to write either file (a
// runtime failure), as opposed to a refusal of what was asked (a bad
// conflist, a missing chained plugin or directory, a bad name).
var ErrWrite = errors.New("install: write failed")

// writeError is an I/O failure: errors.Is(err, ErrWrite) holds.
type writeError struct{ error }

func (e writeError) Unwrap() error        { return e.error }
func (e writeError) Is(target error) bool { return target == ErrWrite }

// copyHook, when set (tests only), wraps the binary's source reader, so a
// test can make the copy fail midway.
var copyHook func(io.Reader) io.Reader

// Install checks o.Conflist, then installs the binary and the conflist, in
// that order: a runtime that sees the config finds the plugin. Each file is
// replaced atomically and only when its content or mode differs. Nothing is
// written when the conflist is invalid, chains a plugin BinDir lacks, or a
// directory is missing; a failure while writing the binary leaves the old
// binary (if any) and no temporary file, and one while writing the
// conflist leaves the new binary (valid and complete: the old conflist
// still works with it) and the old conflist.
func Install(o Options) (Result, error) {
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := Result{
		BinaryPath:   filepath.Join(o.BinDir, cni.PluginType),
		ConflistPath: filepath.Join(o.ConfDir, o.Name),
	}
	if err := checkName(o.Name); err != nil {
		return res, err
	}
	for _, d := range []struct{ flag, dir string }{{"--bin-dir", o.BinDir}, {"--conf-dir", o.ConfDir}} {
		fi, err := os.Stat(d.dir)
		if err != nil {
			return res, fmt.Errorf("%s: %w (mount the host's directory there)", d.flag, err)
		}
		if !fi.IsDir() {
			return res, fmt.Errorf("%s: %s is not a directory", d.flag, d.dir)
		}
	}
	if len(o.Conflist) > maxConflist {
		return res, fmt.Errorf("conflist: %d bytes, more than %d: not a network config", len(o.Conflist), maxConflist)
	}
	list, err := cni.ParseConfList(o.Conflist)
	if err != nil {
		return res, fmt.Errorf("conflist: %w", err)
	}
	for i, typ := range list.Types {
		if typ == cni.PluginType {
			continue
		}
		if err := checkPlugin(filepath.Join(o.BinDir, typ)); err != nil {
			return res, fmt.Errorf("conflist: plugins[%d].type: %q is chained but not installed: %w (install the reference plugins into the host's CNI directory, or remove it from the chain)", i, typ, err)
		}
		if !slices.Contains(res.Chained, typ) {
			res.Chained = append(res.Chained, typ)
		}
	}

	res.BinaryChanged, err = installBinary(o.Binary, res.BinaryPath)
	if err != nil {
		return res, writeError{err}
	}
	res.ConflistChanged, err = installFile(res.ConflistPath, o.Conflist, ConflistMode)
	if err != nil {
		return res, writeError{fmt.Errorf("conflist: %w", err)}
	}
	res.Shadowed = shadowing(o.ConfDir, o.Name)
	log.Info("cni installed", "binary", res.BinaryPath, "binary_changed", res.BinaryChanged,
		"conflist", res.ConflistPath, "conflist_changed", res.ConflistChanged,
		"network", list.Name, "cni_version", list.CNIVersion, "chained", strings.Join(res.Chained, ","))
	if len(res.Shadowed) > 0 {
		log.Warn("network configs sort before drover's: the runtime uses the first one, so drover's is ignored until they are removed",
			"conf_dir", o.ConfDir, "configs", strings.Join(res.Shadowed, ","))
	}
	return res, nil
}

// checkName refuses a file name a runtime would not load as a conflist.
func checkName(name string) error {
	switch {
	case name != filepath.Base(name) || name == "." || name == "..":
		return fmt.Errorf("--name: %q is not a file name", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("--name: %q starts with a dot (hidden, and the prefix of temporary files here)", name)
	case !strings.HasSuffix(name, ".conflist"):
		return fmt.Errorf("--name: %q does not end in .conflist: runtimes read a .conf or .json file as a single plugin's config", name)
	}
	return nil
}

// checkPlugin reports why path is not an executable plugin, or nil.
func checkPlugin(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable (mode %04o)", path, fi.Mode().Perm())
	}
	return nil
}

// installBinary copies src to dst unless dst already holds the same bytes
// with BinaryMode. The copy must yield exactly the size src had when
// opened: a binary replaced or truncated under us is an error, not a short
// plugin.
func installBinary(src, dst string) (bool, error) {
	if src == "" {
		return false, errors.New("binary: no source path")
	}
	f, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("binary: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("binary: %s is not a regular file", src)
	}
	if same, err := sameFile(f, fi.Size(), dst, BinaryMode); err != nil {
		return false, fmt.Errorf("binary: %w", err)
	} else if same {
		return false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("binary: %w", err)
	}
	var r io.Reader = &exactReader{r: f, left: fi.Size(), src: src}
	if copyHook != nil {
		r = copyHook(r)
	}
	if _, err := durable.ReplaceFrom(dst, r, BinaryMode); err != nil {
		return false, fmt.Errorf("binary: %w", err)
	}
	return true, nil
}

// installFile writes data to path unless it holds it already with mode.
func installFile(path string, data []byte, mode os.FileMode) (bool, error) {
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == mode {
			return false, nil
		}
	}
	if err := durable.Replace(path, data, mode); err != nil {
		return false, err
	}
	return true, nil
}

// sameFile reports whether dst is a regular file with mode and the content
// of src (size bytes, read from its current offset).
func sameFile(src io.Reader, size int64, dst string, mode os.FileMode) (bool, error) {
	d, err := os.Open(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size || fi.Mode().Perm() != mode {
		return false, nil
	}
	hs, hd := sha256.New(), sha256.New()
	if _, err := io.Copy(hs, src); err != nil {
		return false, err
	}
	if _, err := io.Copy(hd, d); err != nil {
		return false, err
	}
	return bytes.Equal(hs.Sum(nil), hd.Sum(nil)), nil
}

// exactReader yields exactly left bytes of r: an early EOF or extra bytes
// are errors.
type exactReader struct {
	r    io.Reader
	left int64
	src  string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		var one [1]byte
		if n, _ := e.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s grew while being copied", e.src)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) && e.left > 0 {
		return n, fmt.Errorf("%s shrank while being copied (%d bytes missing)", e.src, e.left)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// shadowing lists the configs in dir a runtime would pick before name:
// containerd, CRI-O and libcni's ConfFiles sort .conf, .conflist and .json
// files by name and use the first.
func shadowing(dir, name string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if n >= name || strings.HasPrefix(n, ".") || e.IsDir() {
			continue
		}
		switch filepath.Ext(n) {
		case ".conf", ".conflist", ".json":
			out = append(out, n)
		}
	}
	return out
}

package install

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const conflist = `{"cniVersion":"1.0.0","name":"drover","plugins":[
 {"type":"drover","hostNat":true},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}
`

// node is a fake node's CNI directories and a plugin binary to install.
type node struct {
	bin, conf, src string
}

func newNode(t *testing.T, chained ...string) node {
	t.Helper()
	d := t.TempDir()
	n := node{bin: filepath.Join(d, "bin"), conf: filepath.Join(d, "net.d"), src: filepath.Join(d, "drover-src")}
	for _, p := range []string{n.bin, n.conf} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A binary big enough that a copy takes several reads.
	if err := os.WriteFile(n.src, bytes.Repeat([]byte("drover binary\n"), 300_000), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range chained {
		if err := os.WriteFile(filepath.Join(n.bin, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n node) opts(t *testing.T, list string) Options {
	return Options{Binary: n.src, Conflist: []byte(list), BinDir: n.bin, ConfDir: n.conf,
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
}

// listing is dir's entries with their modes: temporary files show up.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Name()+" "+fi.Mode().String())
	}
	return out
}

func wantListing(t *testing.T, dir string, want ...string) {
	t.Helper()
	if got := listing(t, dir); !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", dir, got, want)
	}
}

func TestInstall(t *testing.T) {
	n := newNode(t, "portmap")
	res, err := Install(n.opts(t, conflist))
	if err != nil {
		t.Fatal(err)
	}
	if !res.BinaryChanged || !res.ConflistChanged {
		t.Fatalf("first install: got %+v, want both changed", res)
	}
	if !slices.Equal(res.Chained, []string{"portmap"}) {
		t.Fatalf("chained: got %q, want [portmap]", res.Chained)
	}
	wantListing(t, n.bin, "drover -rwxr-xr-x", "portmap -rwxr-xr-x")
	wantListing(t, n.conf, "10-drover.conflist -rw-r--r--")
	src, _ := os.ReadFile(n.src)
	if got, _ := os.ReadFile(res.BinaryPath); !bytes.Equal(got, src) {
		t.Fatalf("installed binary differs from the source (%d bytes, want %d)", len(got), len(src))
	}
	if got, _ := os.ReadFile(res.ConflistPath); string(got) != conflist {
		t.Fatalf("installed conflist: got %q, want %q", got, conflist)
	}

	// Again: nothing changes, not even the modification times a
	// directory watcher would react to.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, p := range []string{res.BinaryPath, res.ConflistPath} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	res2, err := Install(n.opts(t, conflist))
	if err != nil {
		t.Fatalf("second install: %v", err)
	}
	if res2.BinaryChanged || res2.ConflistChanged {
		t.Fatalf("second install: got %+v, want nothing changed", res2)
	}
	for _, p := range []string{res.BinaryPath, res.ConflistPath} {
		if fi, _ := os.Stat(p); !fi.ModTime().Equal(old) {
			t.Fatalf("%s: modified by a no-op install (mtime %v, want %v)", p, fi.ModTime(), old)
		}
	}

	// A new conflist replaces only the conflist; a wrong mode or a
	// changed binary only the binary.
	list2 := strings.Replace(conflist, `"hostNat":true`, `"hostNat":false`, 1)
	if res, err = Install(n.opts(t, list2)); err != nil || res.BinaryChanged || !res.ConflistChanged {
		t.Fatalf("new conflist: got %+v, %v; want only the conflist changed", res, err)
	}
	if err := os.Chmod(res.BinaryPath, 0o700); err != nil {
		t.Fatal(err)
	}
	if res, err = Install(n.opts(t, list2)); err != nil || !res.BinaryChanged || res.ConflistChanged {
		t.Fatalf("binary mode 0700: got %+v, %v; want only the binary changed", res, err)
	}
	if err := os.WriteFile(n.src, []byte("a newer drover"), 0o755); err != nil {
		t.Fatal(err)
	}
	if res, err = Install(n.opts(t, list2)); err != nil || !res.BinaryChanged || res.ConflistChanged {
		t.Fatalf("new binary: got %+v, %v; want only the binary changed", res, err)
	}
	if got, _ := os.ReadFile(res.BinaryPath); string(got) != "a newer drover" {
		t.Fatalf("binary after upgrade: got %q", got)
	}
	wantListing(t, n.bin, "drover -rwxr-xr-x", "portmap -rwxr-xr-x")
	wantListing(t, n.conf, "10-drover.conflist -rw-r--r--")
}

// TestInstallRefuses: what is refused is refused before anything is
// written, with the field named.
func TestInstallRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chained []string // present in the bin dir
		list    string
		opt     func(*Options)
		want    string
	}{
		{name: "invalid drover entry", chained: []string{"portmap"},
			list: strings.Replace(conflist, `"hostNat":true`, `"hostNat":true,"bridgeSubnet":"10.42.1.1/24"`, 1),
			want: "conflist: plugins[0] (drover): bridgeSubnet: 10.42.1.1/24 has host bits set"},
		{name: "chained plugin missing",
			list: conflist, want: `conflist: plugins[1].type: "portmap" is chained but not installed`},
		{name: "not json", list: "{", want: "conflist: conflist is not a JSON object"},
		{name: "unsupported version", chained: []string{"portmap"},
			list: strings.Replace(conflist, `"1.0.0"`, `"1.2.0"`, 1), want: `conflist: cniVersion: "1.2.0" is not a version drover supports`},
		{name: "missing bin dir", chained: []string{"portmap"}, list: conflist,
			opt: func(o *Options) { o.BinDir += "/nope" }, want: "--bin-dir: stat"},
		{name: "conf dir is a file", chained: []string{"portmap"}, list: conflist,
			opt: func(o *Options) { o.ConfDir = filepath.Join(o.BinDir, "portmap") }, want: "is not a directory"},
		{name: "name with a slash", chained: []string{"portmap"}, list: conflist,
			opt: func(o *Options) { o.Name = "../10-drover.conflist" }, want: `--name: "../10-drover.conflist" is not a file name`},
		{name: "name .conf", chained: []string{"portmap"}, list: conflist,
			opt: func(o *Options) { o.Name = "10-drover.conf" }, want: "does not end in .conflist"},
		{name: "hidden name", chained: []string{"portmap"}, list: conflist,
			opt: func(o *Options) { o.Name = ".drover.conflist" }, want: "starts with a dot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.chained...)
			o := n.opts(t, tc.list)
			if tc.opt != nil {
				tc.opt(&o)
			}
			before := listing(t, n.bin)
			_, err := Install(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrWrite) {
				t.Fatalf("%v: a refusal marked as a write failure", err)
			}
			wantListing(t, n.bin, before...)
			wantListing(t, n.conf)
		})
	}
}

func TestInstallChainedNotExecutable(t *testing.T) {
	n := newNode(t, "portmap")
	if err := os.Chmod(filepath.Join(n.bin, "portmap"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Install(n.opts(t, conflist))
	if err == nil || !strings.Contains(err.Error(), "is not executable (mode 0644)") {
		t.Fatalf("got %v, want a refusal naming the mode", err)
	}
	wantListing(t, n.conf)
}

// failAfter yields n bytes of r, then fails.
type failAfter struct {
	r io.Reader
	n int
}

var errInjected = errors.New("injected read failure")

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errInjected
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	return k, err
}

// TestInstallFailsMidway: the binary's copy fails halfway, over an
// installed older binary and conflist: both stay as they were, no temporary
// file stays, and the new conflist is not written (the binary goes first).
// Then the conflist's write fails: the new binary is in place, complete.
func TestInstallFailsMidway(t *testing.T) {
	n := newNode(t, "portmap")
	if _, err := Install(n.opts(t, conflist)); err != nil {
		t.Fatal(err)
	}
	oldBin, _ := os.ReadFile(filepath.Join(n.bin, "drover"))
	newBin := bytes.Repeat([]byte("newer drover\n"), 300_000)
	if err := os.WriteFile(n.src, newBin, 0o755); err != nil {
		t.Fatal(err)
	}
	list2 := strings.Replace(conflist, `"hostNat":true`, `"hostNat":false`, 1)

	copyHook = func(r io.Reader) io.Reader { return &failAfter{r: r, n: len(newBin) / 2} }
	t.Cleanup(func() { copyHook = nil })
	_, err := Install(n.opts(t, list2))
	if !errors.Is(err, errInjected) || !errors.Is(err, ErrWrite) {
		t.Fatalf("copy failing midway: got %v, want %v marked ErrWrite", err, errInjected)
	}
	if got, _ := os.ReadFile(filepath.Join(n.bin, "drover")); !bytes.Equal(got, oldBin) {
		t.Fatalf("binary after a failed copy: %d bytes, want the old %d", len(got), len(oldBin))
	}
	if got, _ := os.ReadFile(filepath.Join(n.conf, DefaultName)); string(got) != conflist {
		t.Fatal("conflist written although the binary failed")
	}
	wantListing(t, n.bin, "drover -rwxr-xr-x", "portmap -rwxr-xr-x")
	wantListing(t, n.conf, "10-drover.conflist -rw-r--r--")

	// The conflist's place is taken by a directory: its rename fails
	// (for root too).
	copyHook = nil
	if err := os.Remove(filepath.Join(n.conf, DefaultName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(n.conf, DefaultName), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Install(n.opts(t, list2))
	if !errors.Is(err, ErrWrite) || !strings.Contains(err.Error(), "conflist: replace") {
		t.Fatalf("conflist write failing: got %v, want a conflist write error", err)
	}
	if got, _ := os.ReadFile(filepath.Join(n.bin, "drover")); !bytes.Equal(got, newBin) {
		t.Fatalf("binary: %d bytes, want the new %d", len(got), len(newBin))
	}
	wantListing(t, n.bin, "drover -rwxr-xr-x", "portmap -rwxr-xr-x")
	wantListing(t, n.conf, "10-drover.conflist drwxr-xr-x")

	// Fixed: the next run completes.
	if err := os.Remove(filepath.Join(n.conf, DefaultName)); err != nil {
		t.Fatal(err)
	}
	res, err := Install(n.opts(t, list2))
	if err != nil || res.BinaryChanged || !res.ConflistChanged {
		t.Fatalf("after the fix: got %+v, %v; want only the conflist written", res, err)
	}
}

func TestInstallShadowed(t *testing.T) {
	n := newNode(t, "portmap")
	for _, f := range []string{"05-cilium.conflist", "10-calico.conflist", "99-loopback.conf", "00-notes.txt", ".hidden.conf"} {
		if err := os.WriteFile(filepath.Join(n.conf, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Install(n.opts(t, conflist))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"05-cilium.conflist", "10-calico.conflist"}; !slices.Equal(res.Shadowed, want) {
		t.Fatalf("shadowing configs: got %q, want %q", res.Shadowed, want)
	}
	// Other configs are never touched.
	if b, _ := os.ReadFile(filepath.Join(n.conf, "05-cilium.conflist")); string(b) != "{}" {
		t.Fatal("another provider's config was changed")
	}
}

// TestExactReader: a source that shrinks or grows during the copy is an
// error, not a short or long plugin.
func TestExactReader(t *testing.T) {
	for _, tc := range []struct {
		data string
		size int64
		want string
	}{
		{"12345", 5, ""},
		{"123", 5, "shrank while being copied (2 bytes missing)"},
		{"1234567", 5, "grew while being copied"},
	} {
		_, err := io.ReadAll(&exactReader{r: strings.NewReader(tc.data), left: tc.size, src: "drover"})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q as %d bytes: got %v, want %q", tc.data, tc.size, err, tc.want)
		}
	}
}

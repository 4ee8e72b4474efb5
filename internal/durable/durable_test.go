package durable

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	for _, want := range []string{"one\n", "two, longer\n", ""} {
		if err := WriteFile(path, []byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("content: got %q, want %q", got, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode: got %o, want 600", fi.Mode().Perm())
		}
		onlyFiles(t, dir, "state")
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "no", "such"), []byte("x")); err == nil {
		t.Fatal("WriteFile into a missing directory: got nil, want an error")
	}
}

// TestReplaceMode: the mode is perm whatever the umask and whatever the
// old file's mode was.
func TestReplaceMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bin")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, perm := range []os.FileMode{0o755, 0o644, 0o700} {
		if err := Replace(path, []byte("new"), perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Fatalf("mode: got %o, want %o", fi.Mode().Perm(), perm)
		}
	}
	onlyFiles(t, dir, "bin")
}

// failingReader yields n bytes, then fails: a source that breaks mid-copy.
type failingReader struct{ n int }

var errMidway = errors.New("source failed midway")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errMidway
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

// TestReplaceFromFailsMidway: a source that fails after writing part of
// the data leaves the old file as it was and no temporary file.
func TestReplaceFromFailsMidway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-drover.conflist")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := ReplaceFrom(path, &failingReader{n: 100 << 10}, 0o644)
	if !errors.Is(err, errMidway) {
		t.Fatalf("ReplaceFrom: got %v, want %v", err, errMidway)
	}
	if n != 100<<10 {
		t.Fatalf("bytes written before the failure: got %d, want %d", n, 100<<10)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("after a failed replace: got %q, want the old content", b)
	}
	onlyFiles(t, dir, "10-drover.conflist")
}

// TestReplaceOverDirectory: a directory where the file belongs fails the
// rename; the directory stays, and no temporary file does.
func TestReplaceOverDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "drover")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReplaceFrom(path, strings.NewReader("binary"), 0o755); err == nil {
		t.Fatal("replace over a directory: got nil, want an error")
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("the directory: %v, %v", fi, err)
	}
	onlyFiles(t, dir, "drover")
}

func TestReplaceFromCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	n, err := ReplaceFrom(path, io.LimitReader(&failingReader{n: 1 << 20}, 5000), 0o600)
	if err != nil || n != 5000 {
		t.Fatalf("ReplaceFrom: got %d, %v; want 5000, nil", n, err)
	}
}

// onlyFiles fails unless dir holds exactly names: no temporary file left.
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("directory %s: got %q, want %q", dir, got, names)
	}
}

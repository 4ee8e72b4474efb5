package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identities.json")
	p, err := OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b := [32]byte{1}, [32]byte{2}
	if why := p.Check("h2", a); why != "" {
		t.Fatalf("first key for h2: got %q, want accepted", why)
	}
	if why := p.Check("h2", b); !strings.Contains(why, "differs from the one pinned") {
		t.Fatalf("another key for h2: got %q, want refused", why)
	}
	if why := p.Check("h3", [32]byte{}); why == "" {
		t.Fatal("a zero identity key: got accepted, want refused")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("pins file written before Flush, want one write per Flush")
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pins file: %v, %v; want mode 0600", fi, err)
	}
	// The pin survives a restart; Forget lets the next key in.
	p, err = OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if why := p.Check("h2", b); why == "" {
		t.Fatal("after reopening: another key for h2 accepted, want refused")
	}
	if ok, err := p.Forget("h2"); !ok || err != nil {
		t.Fatalf("Forget h2: got %v, %v; want true, nil", ok, err)
	}
	if ok, err := p.Forget("h2"); ok || err != nil {
		t.Fatalf("Forget h2 again: got %v, %v; want false, nil", ok, err)
	}
	if why := p.Check("h2", b); why != "" {
		t.Fatalf("after Forget: got %q, want the new key pinned", why)
	}
}

// A pins file that is not ours is refused with its name, not half-read.
func TestPinsCorrupt(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"not json", "{", "delete the file"},
		{"unknown field", `{"version":1,"identities":{},"x":1}`, "delete the file"},
		{"version", `{"version":2,"identities":{}}`, "version 2"},
		{"bad key", `{"version":1,"identities":{"h2":"abcd"}}`, "not 32 hex-encoded bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identities.json")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenPins(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenPins: got %v, want an error naming %s and saying %q", err, path, tc.want)
			}
		})
	}
}

// Invented names cannot grow the file without end.
func TestPinsBounded(t *testing.T) {
	p, err := OpenPins(filepath.Join(t.TempDir(), "identities.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxPins {
		p.ids[strings.Repeat("n", 1)+string(rune(0x4e00+i))] = [32]byte{1}
	}
	if why := p.Check("one-more", [32]byte{3}); !strings.Contains(why, "no room") {
		t.Fatalf("a new name past MaxPins: got %q, want refused", why)
	}
}

// A failed write keeps the pins in memory (another key under the name is
// still refused) and the next Flush writes them.
func TestPinsFlushRetries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "identities.json")
	p, err := OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // a file where the directory goes
		t.Fatal(err)
	}
	if why := p.Check("h2", [32]byte{1}); why != "" {
		t.Fatalf("first key for h2: got %q, want accepted", why)
	}
	if err := p.Flush(); err == nil {
		t.Fatal("Flush into a file's path: got nil, want an error")
	}
	if why := p.Check("h2", [32]byte{2}); why == "" {
		t.Fatal("after a failed Flush: another key for h2 accepted, want refused")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatalf("Flush after the path is fixed: %v", err)
	}
	q, err := OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := q.Pinned("h2"); !ok || id != ([32]byte{1}) {
		t.Fatalf("reopened: h2 pinned %v %v, want the first key", id, ok)
	}
}

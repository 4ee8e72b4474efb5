package blocks

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "block.json") // directory created by Save
	s := Open(path)
	if c, ok, err := s.Load(); err != nil || ok || c != (Claim{}) {
		t.Fatalf("missing file: got %+v, %v, %v; want zero, false, nil", c, ok, err)
	}
	for _, want := range []Claim{
		{Node: "host-1", Block: pfx("10.42.7.0/24"), Since: 1_700_000_000_123_456_789},
		{Node: "host-1", Block: pfx("10.42.8.0/24"), Since: 1_700_000_001_000_000_000}, // replaced
		{Node: "h6", Block: pfx("fd42:0:0:7::/64"), Since: -5},
	} {
		if err := s.Save(want); err != nil {
			t.Fatal(err)
		}
		got, ok, err := Open(path).Load()
		if err != nil || !ok || got != want {
			t.Fatalf("got %+v, %v, %v; want %+v, true, nil", got, ok, err, want)
		}
	}
	// Live and Static are not stored: they are not the owner's to persist.
	if err := s.Save(Claim{Node: "n", Block: pfx("10.42.1.0/24"), Since: 3, Live: true}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Load(); got.Live {
		t.Errorf("got %+v, want Live false after Load", got)
	}
}

func TestStoreFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "block.json")
	// An existing file with a loose mode is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Open(path).Save(Claim{Node: "n", Block: pfx("10.42.1.0/24"), Since: 1}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("got mode %v, want 0600", m)
	}
	// No temporary files left behind.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("got files %v, want only block.json", names)
	}
}

func TestStoreCorrupt(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty", "", "EOF"},
		{"truncated", `{"version":1,"node":"n","blo`, "unexpected EOF"},
		{"not JSON", "\x00\x01garbage", "invalid character"},
		{"trailing data", `{"version":1,"node":"n","block":"10.42.1.0/24","since":1}{}`, "data after"},
		{"unknown field", `{"version":1,"node":"n","block":"10.42.1.0/24","since":1,"x":2}`, `unknown field "x"`},
		{"wrong version", `{"version":2,"node":"n","block":"10.42.1.0/24","since":1}`, "version 2, want 1"},
		{"bad block", `{"version":1,"node":"n","block":"10.42.1.0/33","since":1}`, "not a network prefix"},
		{"unmasked block", `{"version":1,"node":"n","block":"10.42.1.9/24","since":1}`, "not a network prefix"},
		{"no node", `{"version":1,"node":"","block":"10.42.1.0/24","since":1}`, "empty node name"},
		{"wrong type", `{"version":1,"node":"n","block":"10.42.1.0/24","since":"soon"}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "block.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			c, ok, err := Open(path).Load()
			if err == nil || ok {
				t.Fatalf("got %+v, %v, nil; want an error", c, ok)
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q; want ErrCorrupt naming %s and containing %q", err, path, tt.want)
			}
		})
	}
}

func TestStoreErrors(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: reading fails, naming the path.
	path := filepath.Join(dir, "block.json")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(path).Load(); err == nil || !strings.Contains(err.Error(), path) || errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of a directory: got %v; want a read error naming %s", err, path)
	}
	if err := Open(path).Save(Claim{Node: "n", Block: pfx("10.42.1.0/24")}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Save over a directory: got %v; want an error naming %s", err, path)
	}
	if err := Open(filepath.Join(dir, "x.json")).Save(Claim{Node: "n"}); err == nil {
		t.Error("Save of a claim without a block: got nil, want an error")
	}
	// Save's failure left no temporary file.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("got %d entries in %s after failed saves, want 1", len(ents), dir)
	}
}

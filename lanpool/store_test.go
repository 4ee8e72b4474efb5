package lanpool

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chunks.json")
	s := OpenStore(path)
	if got, err := s.Load(); err != nil || got != nil {
		t.Fatalf("no file: got %v, %v; want nothing", got, err)
	}
	other := lan
	other.Network = "lan2"
	want := []Held{{Pool: lan, Claim: Claim{Index: 2, Since: 1800000000000000000, Valid: true}}, {Pool: other}}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: got %+v, %v; want %+v", got, err, want)
	}
	for name, body := range map[string]string{
		"not JSON":      "{",
		"version":       `{"version":2,"pools":[]}`,
		"unknown field": `{"version":1,"pools":[],"x":1}`,
		"bad range":     `{"version":1,"pools":[{"network":"n","start":"10.0.0.9","end":"10.0.0.1","chunk_size":4}]}`,
		"bad index":     `{"version":1,"pools":[{"network":"n","start":"10.0.0.1","end":"10.0.0.9","chunk_size":4,"index":3}]}`,
	} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

package gossip

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAddrBook(t *testing.T) {
	path := filepath.Join(t.TempDir(), "members.json")
	b := OpenAddrBook(path)
	if got, err := b.Load(); err != nil || got != nil {
		t.Fatalf("Load without a file: got %v, %v; want nothing, nil", got, err)
	}
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("192.0.2.%d:7946", 100+i))
	}
	if err := b.Save(append([]string{"192.0.2.2:7946", "192.0.2.2:7946"}, many...)); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxBookAddrs || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("Load after saving 42 (one duplicate): got %d sorted=%v, want %d sorted", len(got), slices.IsSorted(got), MaxBookAddrs)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("book file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	for _, bad := range []string{"{", `{"version":2,"addrs":[]}`, `{"version":1,"addrs":[],"x":1}`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Load(); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Load of %q: got %v, want an error naming the file", bad, err)
		}
	}
	// Addresses that do not parse are skipped, not fatal.
	if err := os.WriteFile(path, []byte(`{"version":1,"addrs":["nonsense","192.0.2.9:7946"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Load(); err != nil || !slices.Equal(got, []string{"192.0.2.9:7946"}) {
		t.Fatalf("Load with a bad entry: got %v, %v; want [192.0.2.9:7946]", got, err)
	}
}

// A node restarted alone with only remembered addresses (no seed) finds the
// cluster again through them.
func TestRejoinThroughRemembered(t *testing.T) {
	leakCheck(t)
	a := startNode(t, "a", testInfo("a", 1))
	b := startNode(t, "b", testInfo("b", 2), func(c *Config) {
		c.ReconnectInterval = time.Minute
		c.JoinRetryMin, c.JoinRetryMax = 100*time.Millisecond, 500*time.Millisecond
	})
	if got := b.AliveAddrs(); len(got) != 0 {
		t.Fatalf("AliveAddrs alone: got %v, want none", got)
	}
	b.AddSeeds([]string{a.LocalAddr().String()})
	want := []string{a.LocalAddr().String()}
	err := poll(5*time.Second, func() error {
		if m, ok := member(a, "b"); !ok || m.State != Alive {
			return fmt.Errorf("a does not list b alive")
		}
		if got := b.AliveAddrs(); !slices.Equal(got, want) {
			return fmt.Errorf("b's AliveAddrs: got %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

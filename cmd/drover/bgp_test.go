//go:build !nobgp

package main

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
)

// recLocal is the agent's Router, recording the local prefixes.
type recLocal struct{ local []netip.Prefix }

func (r *recLocal) SetPeers([]*router.Peer) error { return nil }
func (r *recLocal) SetLocal(p []netip.Prefix, _ []netip.Addr) error {
	r.local = p
	return nil
}

// TestAnnouncingRouter: what the agent sets as local prefixes is what the
// speaker announces; a block given up is withdrawn.
func TestAnnouncingRouter(t *testing.T) {
	cfg := &config.Config{Node: config.Node{UnderlayAddr: netip.MustParseAddr("127.0.0.1")}, BGP: &config.BGP{
		AS: 64601, RouterIDAddr: netip.MustParseAddr("192.0.2.1"), RestartTime: 10 * time.Second,
		// Nobody listens there: announcing needs no session.
		Neighbors: []config.BGPNeighbor{{AddressAddr: netip.MustParseAddr("127.0.0.1"), AS: 64600, Port: 1}},
	}}
	bs, err := startBGP(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.sp.Close(false)
	inner := &recLocal{}
	r := announcingRouter{Router: inner, b: bs}
	a, b := netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("10.42.9.0/24")
	for _, step := range []struct{ set, want []netip.Prefix }{
		{[]netip.Prefix{a}, []netip.Prefix{a}},
		{[]netip.Prefix{b}, []netip.Prefix{b}}, // the block moved
		{nil, []netip.Prefix{}},                // given up
	} {
		if err := r.SetLocal(step.set, nil); err != nil {
			t.Fatal(err)
		}
		if got := bs.sp.Announced(); !slices.Equal(got, step.want) {
			t.Errorf("after SetLocal(%v): announced %v, want %v", step.set, got, step.want)
		}
		if !slices.Equal(inner.local, step.set) {
			t.Errorf("router's local prefixes %v, want %v", inner.local, step.set)
		}
	}
}

// TestReadSecretLine: a TCP MD5 key file others can read, an empty one,
// one of several lines or longer than RFC 2385 allows is refused, naming
// the file and why; a good one is read without its newline.
func TestReadSecretLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, content string
		mode          os.FileMode
		want, err     string
	}{
		{"good", "s3cret\n", 0o600, "s3cret", ""},
		{"readable", "s3cret\n", 0o644, "", "lets group or others read it"},
		{"empty", "\n", 0o600, "", "empty"},
		{"two lines", "a\nb\n", 0o600, "", "more than one line"},
		{"too long", strings.Repeat("k", 81), 0o600, "", "at most 80"},
	}
	for _, tc := range tests {
		got, err := readSecretLine(write(tc.name, tc.content, tc.mode))
		if tc.err == "" && (err != nil || got != tc.want) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.name)) {
			t.Errorf("%s: got %q, %v; want %q, an error containing %q", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := readSecretLine(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: got %v, want not a regular file", err)
	}
}

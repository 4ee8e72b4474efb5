package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/gossip"
)

// POST /v1/identities/forget: a name that is missing, too long or not
// pinned is refused and changes nothing; a pinned one is unpinned.
func TestForgetEndpoint(t *testing.T) {
	pins, err := agent.OpenPins(filepath.Join(t.TempDir(), "identities.json"))
	if err != nil {
		t.Fatal(err)
	}
	if why := pins.Check("h2", [32]byte{7}); why != "" {
		t.Fatal(why)
	}
	c := &cluster{pins: pins, log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	c.register(mux)
	for _, tc := range []struct {
		method, query string
		want          int
	}{
		{"POST", "", http.StatusBadRequest},
		{"POST", "?name=" + strings.Repeat("x", 200), http.StatusBadRequest},
		{"POST", "?name=h9", http.StatusNotFound},
		{"GET", "?name=h2", http.StatusMethodNotAllowed},
		{"POST", "?name=h2", http.StatusNoContent},
		{"POST", "?name=h2", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(tc.method, "/v1/identities/forget"+tc.query, nil))
		if rec.Code != tc.want {
			t.Errorf("%s forget%.20s: got %d, want %d (%s)", tc.method, tc.query, rec.Code, tc.want, strings.TrimSpace(rec.Body.String()))
		}
		if tc.want != http.StatusNoContent {
			if _, ok := pins.Pinned("h2"); !ok && tc.query != "?name=h2" {
				t.Fatalf("%s forget%.20s unpinned h2", tc.method, tc.query)
			}
		}
	}
	if _, ok := pins.Pinned("h2"); ok {
		t.Fatal("h2 still pinned after a successful forget")
	}
}

// TestTimingsMatchGossip: cluster.timing accepts exactly the profiles
// gossip has, with the same default; the config package keeps its own
// list so as not to import gossip.
func TestTimingsMatchGossip(t *testing.T) {
	if got, want := config.Timings, gossip.TimingNames(); !slices.Equal(got, want) {
		t.Errorf("config.Timings: got %v, want gossip's %v", got, want)
	}
	for _, name := range config.Timings {
		if _, err := gossip.WithTiming(gossip.Config{}, name); err != nil {
			t.Errorf("gossip.WithTiming(%q): %v", name, err)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drovernet/drover/gossip"
)

// TestExitStatus: usage and configuration errors exit 2 with a message
// naming the problem; runtime failures exit 1.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", "node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24]}\ncipher: rot13\n")
	badTopo := filepath.Join(dir, "bad.clab.yml")
	if err := os.WriteFile(badTopo, []byte("name: t\ntopology:\n  nodes:\n    h1: {kind: linux, image: drover:x}\n  links:\n    - endpoints: [h1:eth1, h9:eth1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no command", nil, 2, "Usage"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"run without config", []string{"run"}, 2, "--config FILE is required"},
		{"run bad flag", []string{"run", "--nope"}, 2, "nope"},
		{"run missing file", []string{"run", "--config", filepath.Join(dir, "missing.yaml")}, 2, "no such file"},
		{"run bad config", []string{"run", "--config", bad}, 2, `cipher: "rot13" is not one of`},
		{"status bad output", []string{"status", "-o", "xml"}, 2, `-o "xml"`},
		{"status no daemon", []string{"status", "--socket", filepath.Join(dir, "none.sock")}, 1, "does not exist"},
		{"lab bad hosts", []string{"lab", "--hosts", "1"}, 2, "--hosts 1"},
		{"lab topology and hosts", []string{"lab", "--topology", "x.clab.yml", "--hosts", "4"}, 2, "--hosts does not apply to --topology"},
		{"lab bin-arm64 alone", []string{"lab", "--bin-arm64", "x"}, 2, "need --topology"},
		{"lab topology missing", []string{"lab", "--topology", filepath.Join(dir, "none.clab.yml")}, 2, "no such file"},
		{"lab topology malformed", []string{"lab", "--topology", badTopo}, 2, `links[0]: endpoints[1]: no node "h9"`},
		{"version", []string{"version"}, 0, "drover"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit status: got %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			if all := out.String() + errb.String(); !strings.Contains(all, tc.msg) {
				t.Errorf("output %q does not contain %q", all, tc.msg)
			}
		})
	}
}

func TestClusterLine(t *testing.T) {
	tests := []struct {
		v    gossip.View
		want string
	}{
		{gossip.View{Epoch: 1, AloneSince: "2026-12-06T05:00:00Z", Members: []gossip.MemberView{{Name: "h1", State: "alive"}}},
			"cluster: alone since 2026-12-06T05:00:00Z, retrying joins through its seeds and every member seen"},
		{gossip.View{Epoch: 1, Members: []gossip.MemberView{{Name: "h1", State: "alive"}, {Name: "h2", State: "alive"}, {Name: "h3", State: "dead"}, {Name: "h4", State: "suspect"}}},
			"cluster: joined, 2 other members alive"},
	}
	for _, tc := range tests {
		if got := clusterLine(tc.v); got != tc.want {
			t.Errorf("clusterLine: got %q, want %q", got, tc.want)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallCNIExitStatus: refusals (flags, the conflist, the mounts) exit
// 2 and write nothing; a failed write exits 1; success 0. The binary copied
// is this test binary (os.Executable).
func TestInstallCNIExitStatus(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conflist", `{"cniVersion":"1.0.0","name":"drover","plugins":[{"type":"drover"}]}`)
	bad := write("bad.conflist", `{"cniVersion":"1.0.0","name":"drover","plugins":[{"type":"drover","mtu":10}]}`)
	dirs := []string{"--bin-dir", bin, "--conf-dir", conf}
	cases := []struct {
		name  string
		args  []string
		setup func()
		code  int
		msg   string
	}{
		{"no conflist", []string{"install-cni"}, nil, 2, "--conflist FILE is required"},
		{"bad flag", []string{"install-cni", "--nope"}, nil, 2, "nope"},
		{"argument", []string{"install-cni", "--conflist", good, "extra"}, nil, 2, `unexpected argument "extra"`},
		{"missing conflist", append([]string{"install-cni", "--conflist", filepath.Join(dir, "none")}, dirs...), nil, 2, "no such file"},
		{"invalid conflist", append([]string{"install-cni", "--conflist", bad}, dirs...), nil, 2, "plugins[0] (drover): mtu: 10 is outside"},
		{"missing dir", []string{"install-cni", "--conflist", good, "--bin-dir", filepath.Join(dir, "none"), "--conf-dir", conf}, nil, 2, "--bin-dir: stat"},
		{"write fails", append([]string{"install-cni", "--conflist", good}, dirs...), func() {
			if err := os.Mkdir(filepath.Join(conf, "10-drover.conflist"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, 1, "conflist: replace"},
		{"ok", append([]string{"install-cni", "--conflist", good}, dirs...), func() {
			if err := os.Remove(filepath.Join(conf, "10-drover.conflist")); err != nil {
				t.Fatal(err)
			}
		}, 0, "cni installed"},
		{"help", []string{"install-cni", "-h"}, nil, 0, "Usage: drover install-cni"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit status: got %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			if all := out.String() + errb.String(); !strings.Contains(all, tc.msg) {
				t.Errorf("output %q does not contain %q", all, tc.msg)
			}
			if code == 2 {
				for _, d := range []string{bin, conf} {
					if ents, _ := os.ReadDir(d); len(ents) != 0 {
						t.Errorf("%s: %d entries after a refusal, want none", d, len(ents))
					}
				}
			}
		})
	}
}

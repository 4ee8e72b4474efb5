package cni

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseConfListExamples(t *testing.T) {
	for _, f := range []string{"../examples/drover.conflist", "../examples/drover-flat.conflist"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseConfList(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if l.Name != "drover" || l.Types[0] != PluginType {
			t.Fatalf("%s: got %+v", f, l)
		}
		// What ships must start containers under Podman 4.3 and
		// containerd 1.6 (libcni 1.1: at most 1.0.0) and get GC and
		// STATUS from containerd 2.x (libcni 1.2+ reads cniVersions).
		if l.CNIVersion != "1.0.0" || !slices.Equal(l.CNIVersions, []string{"1.0.0", "1.1.0"}) {
			t.Errorf("%s: got cniVersion %q, cniVersions %q; want 1.0.0 and [1.0.0 1.1.0]", f, l.CNIVersion, l.CNIVersions)
		}
	}
}

func TestParseConfList(t *testing.T) {
	const ok = `{"cniVersion":"1.0.0","name":"drover","plugins":[{"type":"drover"},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	l, err := ParseConfList([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(l.Types, ","); got != "drover,portmap" || l.CNIVersion != "1.0.0" {
		t.Fatalf("got %+v", l)
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"not json", `{`, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"unknown key", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover"}],"bogus":1}`, `unknown key "bogus"`},
		{"plugin key at top", `{"cniVersion":"1.0.0","name":"n","type":"drover","plugins":[{"type":"drover"}]}`, "belong inside plugins[]"},
		{"no version", `{"name":"n","plugins":[{"type":"drover"}]}`, "cniVersion: missing"},
		{"bad version", `{"cniVersion":"2.0.0","name":"n","plugins":[{"type":"drover"}]}`, `cniVersion: "2.0.0" is not a version`},
		{"version type", `{"cniVersion":1,"name":"n","plugins":[{"type":"drover"}]}`, "cniVersion: got a JSON number, want a string"},
		{"bad versions", `{"cniVersion":"1.0.0","cniVersions":["1.0.0","9"],"name":"n","plugins":[{"type":"drover"}]}`, `cniVersions[1]: "9"`},
		{"no name", `{"cniVersion":"1.0.0","plugins":[{"type":"drover"}]}`, "name: missing"},
		{"bad name", `{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"drover"}]}`, `name: "a/b" may only hold`},
		{"disableCheck type", `{"cniVersion":"1.0.0","name":"n","disableCheck":"yes","plugins":[{"type":"drover"}]}`, "disableCheck: got a JSON string, want true or false"},
		{"no plugins", `{"cniVersion":"1.0.0","name":"n"}`, "plugins: missing or empty"},
		{"empty plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, "plugins: missing or empty"},
		{"plugins type", `{"cniVersion":"1.0.0","name":"n","plugins":{}}`, "plugins: got a JSON object, want a list of objects"},
		{"null plugin", `{"cniVersion":"1.0.0","name":"n","plugins":[null]}`, "plugins[0]: want an object"},
		{"no type", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover"},{}]}`, "plugins[1].type: missing"},
		{"type path", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover"},{"type":"../x"}]}`, `plugins[1].type: "../x" is not a plugin file name`},
		{"type number", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":7}]}`, "plugins[0].type: got a JSON number"},
		{"no drover", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"portmap"}]}`, `plugins: no plugin of type "drover" (types: portmap)`},
		{"drover unknown key", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover","brige":"x"}]}`, `plugins[0] (drover): unknown key "brige" = "x" in network config (did you mean "bridge"?)`},
		{"drover bad value", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover","bridgeSubnet":"10.42.1.1/24"}]}`, "plugins[0] (drover): bridgeSubnet: 10.42.1.1/24 has host bits set"},
		{"drover bad type", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover","mtu":"1400"}]}`, "plugins[0] (drover): mtu: got a JSON string, want a number"},
		{"drover second", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"portmap"},{"type":"drover","ipam":{"type":"host-local"}}]}`, `plugins[1] (drover): ipam.type: "host-local" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfList([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestParseConfListInjects: the list's name and version reach the drover
// entry as the runtime injects them, overriding the entry's own.
func TestParseConfListInjects(t *testing.T) {
	in := `{"cniVersion":"0.3.1","name":"drover","plugins":[{"type":"drover","name":"-bad","cniVersion":"9"}]}`
	if _, err := ParseConfList([]byte(in)); err != nil {
		t.Fatalf("entry's own name and version should be overridden by the list's: %v", err)
	}
}

// FuzzParseConfList: whatever install-cni is handed, the parser answers
// without panicking, and what it accepts has a drover entry and a version
// drover supports.
func FuzzParseConfList(f *testing.F) {
	for _, file := range []string{"../examples/drover.conflist", "../examples/drover-flat.conflist"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"drover","ipam":{"type":"drover","subnet":"10.42.1.0/24"}},{"type":"portmap"}]}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","cniVersions":["1.0.0"],"name":"n","disableGC":true,"plugins":[null]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseConfList(b)
		if err != nil {
			return
		}
		if l.Name == "" || l.CNIVersion == "" || !slices.Contains(l.Types, PluginType) {
			t.Fatalf("accepted %q as %+v", b, l)
		}
	})
}

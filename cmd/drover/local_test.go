package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/drovernet/drover/cni"
	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/internal/metrics"
	"github.com/drovernet/drover/metadata"
	"github.com/drovernet/drover/router"
)

// localHarness is a localSet behind its real handlers.
type localHarness struct {
	t   *testing.T
	set *localSet
	srv *httptest.Server

	mu       sync.Mutex
	prefixes []netip.Prefix
}

func newLocalHarness(t *testing.T, stateDir, defDir string, prefixes ...string) *localHarness {
	t.Helper()
	h := &localHarness{t: t}
	for _, p := range prefixes {
		h.prefixes = append(h.prefixes, netip.MustParsePrefix(p))
	}
	h.set = newLocalSet(h.nodePrefixes, stateDir, defDir, slog.New(slog.NewTextHandler(t.Output(), nil)))
	mux := http.NewServeMux()
	h.set.register(mux)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *localHarness) nodePrefixes() []netip.Prefix {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.prefixes)
}

func (h *localHarness) do(method, path, body string) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *localHarness) post(l cni.Local) (int, string) {
	h.t.Helper()
	b, _ := json.Marshal(l)
	return h.do(http.MethodPost, "/v1/local", string(b))
}

// list is GET /v1/local as "ip container/ifname source" lines.
func (h *localHarness) list() []string {
	h.t.Helper()
	code, body := h.do(http.MethodGet, "/v1/local", "")
	if code != http.StatusOK {
		h.t.Fatalf("GET /v1/local: %d %s", code, body)
	}
	var es []localEntry
	if err := json.Unmarshal([]byte(body), &es); err != nil {
		h.t.Fatalf("GET /v1/local: %v\n%s", err, body)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, e.IP+" "+e.ContainerID+"/"+e.IfName+" "+e.Source)
	}
	return out
}

func wantList(t *testing.T, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("GET /v1/local:\n got %q\nwant %q", got, want)
	}
}

func local(ip, cid string) cni.Local {
	return cni.Local{Network: "drover", ContainerID: cid, IfName: "eth0", IP: ip, MAC: "0a:58:0a:2a:01:05", Bridge: "drover-br0"}
}

// Every bad notice is refused with 400 and a message naming the problem;
// a node without a block answers 503 (try again later).
func TestLocalPostValidation(t *testing.T) {
	h := newLocalHarness(t, "", t.TempDir(), "10.42.1.0/24", "fd42:1::/64")
	dataDir, file, writable := t.TempDir(), filepath.Join(t.TempDir(), "file"), t.TempDir()
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writable, 0o775); err != nil {
		t.Fatal(err)
	}
	with := func(f func(*cni.Local)) string {
		l := local("10.42.1.5", "c1")
		f(&l)
		b, _ := json.Marshal(l)
		return string(b)
	}
	for _, tc := range []struct {
		name, body string
		code       int
		msg        string
	}{
		{"ok", with(func(*cni.Local) {}), 204, ""},
		{"ok v6, extra field", `{"network":"n","container_id":"c","ifname":"eth0","ip":"fd42:1::5","future":1}`, 204, ""},
		{"not JSON", "{", 400, "body is not a local container"},
		{"wrong type", `{"ip":5}`, 400, "body is not a local container"},
		{"no ip", with(func(l *cni.Local) { l.IP = "" }), 400, "ip: missing"},
		{"bad ip", with(func(l *cni.Local) { l.IP = "10.42.1.300" }), 400, `ip: ParseAddr("10.42.1.300")`},
		{"outside", with(func(l *cni.Local) { l.IP = "10.42.2.5" }), 400, "ip 10.42.2.5 is not inside this node's prefixes [10.42.1.0/24 fd42:1::/64]"},
		{"no container", with(func(l *cni.Local) { l.ContainerID = "" }), 400, "container_id: missing"},
		{"no ifname", with(func(l *cni.Local) { l.IfName = "" }), 400, "ifname: missing"},
		{"no network", with(func(l *cni.Local) { l.Network = "" }), 400, "network: missing"},
		{"network path", with(func(l *cni.Local) { l.Network = "../etc" }), 400, `network "../etc" may only hold`},
		{"relative data_dir", with(func(l *cni.Local) { l.DataDir = "var/lib" }), 400, `data_dir "var/lib" is not an absolute path`},
		{"data_dir with ..", with(func(l *cni.Local) { l.DataDir = dataDir + "/../" + filepath.Base(dataDir) }), 400, "is not a clean path"},
		{"data_dir with .", with(func(l *cni.Local) { l.DataDir = dataDir + "/./" }), 400, "is not a clean path"},
		{"data_dir /", with(func(l *cni.Local) { l.DataDir = "/" }), 400, "is not a clean path"},
		{"data_dir too long", with(func(l *cni.Local) { l.DataDir = "/" + strings.Repeat("d", maxDataDirLen) }), 400, "data_dir: 513 bytes, at most 512"},
		{"data_dir missing", with(func(l *cni.Local) { l.DataDir = dataDir + "/nope" }), 400, "data_dir: stat " + dataDir + "/nope: no such file"},
		{"data_dir a file", with(func(l *cni.Local) { l.DataDir = file }), 400, "data_dir " + file + " is not a directory"},
		{"data_dir group-writable", with(func(l *cni.Local) { l.DataDir = writable }), 400, "data_dir " + writable + " is mode 0775: group or others may write to it"},
		{"data_dir ok, trailing slash", with(func(l *cni.Local) { l.DataDir = dataDir + "/" }), 204, ""},
		{"container_id too long", with(func(l *cni.Local) { l.ContainerID = strings.Repeat("c", maxIDLen+1) }), 400, "container_id: 257 bytes, at most 256"},
		{"ifname too long", with(func(l *cni.Local) { l.IfName = "eth0123456789abc" }), 400, "ifname: 16 bytes, at most 15"},
		{"bridge too long", with(func(l *cni.Local) { l.Bridge = "drover-bridge-00" }), 400, "bridge: 16 bytes, at most 15"},
		{"bad mac", with(func(l *cni.Local) { l.MAC = "0a:58" }), 400, "mac: "},
		{"too large", `{"ip":"` + strings.Repeat("1", maxLocalBody) + `"}`, 413, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := h.do(http.MethodPost, "/v1/local", tc.body)
			if code != tc.code || !strings.Contains(body, tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.code, tc.msg)
			}
		})
	}
	h.mu.Lock()
	h.prefixes = nil
	h.mu.Unlock()
	if code, body := h.post(local("10.42.1.6", "c2")); code != 503 || !strings.Contains(body, "this node has no block yet") {
		t.Fatalf("without a block: got %d %q, want 503", code, body)
	}
}

// POST adds (and replaces an address's previous holder), DELETE removes and
// can be repeated, GET lists in address order.
func TestLocalAddDeleteList(t *testing.T) {
	h := newLocalHarness(t, "", t.TempDir(), "10.42.1.0/24")
	wantList(t, h.list())
	for _, l := range []cni.Local{local("10.42.1.10", "b"), local("10.42.1.9", "a"), local("10.42.1.100", "c")} {
		if code, body := h.post(l); code != 204 {
			t.Fatalf("POST %s: %d %s", l.IP, code, body)
		}
	}
	wantList(t, h.list(), "10.42.1.9 a/eth0 notice", "10.42.1.10 b/eth0 notice", "10.42.1.100 c/eth0 notice")
	if code, _ := h.post(local("10.42.1.10", "b2")); code != 204 {
		t.Fatal("POST of a new holder refused")
	}
	for _, ip := range []string{"10.42.1.9", "10.42.1.9", "10.42.1.77"} {
		if code, body := h.do(http.MethodDelete, "/v1/local/"+ip, ""); code != 204 {
			t.Fatalf("DELETE %s: %d %s", ip, code, body)
		}
	}
	if code, body := h.do(http.MethodDelete, "/v1/local/bogus", ""); code != 400 || !strings.Contains(body, "bogus") {
		t.Fatalf("DELETE bogus: got %d %q, want 400 naming it", code, body)
	}
	wantList(t, h.list(), "10.42.1.10 b2/eth0 notice", "10.42.1.100 c/eth0 notice")
	// The raw JSON keeps the plugin's field names.
	_, body := h.do(http.MethodGet, "/v1/local", "")
	for _, k := range []string{`"network": "drover"`, `"container_id": "b2"`, `"ifname": "eth0"`, `"ip": "10.42.1.10"`, `"mac": "0a:58:0a:2a:01:05"`, `"bridge": "drover-br0"`, `"source": "notice"`} {
		if !strings.Contains(body, k) {
			t.Fatalf("GET /v1/local lacks %s:\n%s", k, body)
		}
	}
}

func reserve(t *testing.T, dataDir, network string, ip, cid string) ipam.Owner {
	t.Helper()
	s, err := ipam.Open(filepath.Join(dataDir, network))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr(ip)
	o := ipam.Owner{ContainerID: cid, IfName: "eth0"}
	pool := ipam.Pool{Subnet: netip.PrefixFrom(a, 24).Masked(), Start: a, End: a}
	if got, err := s.Allocate(pool, o); err != nil || got != a {
		t.Fatalf("reserve %s: got %v, %v", ip, got, err)
	}
	return o
}

func release(t *testing.T, dataDir, network string, o ipam.Owner) {
	t.Helper()
	s, err := ipam.Open(filepath.Join(dataDir, network))
	if err != nil {
		t.Fatal(err)
	}
	if ips, err := s.Release(o); err != nil || len(ips) != 1 {
		t.Fatalf("release %s: %v, %v", o, ips, err)
	}
}

// A daemon that starts reads the reservation directories: those under the
// default data dir, and those a notice named before it restarted. GET
// reconciles with them, so a release it was not told about still shows.
func TestLocalRebuild(t *testing.T) {
	state, def, other := t.TempDir(), t.TempDir(), t.TempDir()
	reserve(t, def, "drover", "10.42.1.2", "d1")
	reserve(t, def, "drover", "10.42.9.2", "elsewhere") // another node's block
	reserve(t, def, "second", "10.42.1.200", "d2")
	reserve(t, other, "custom", "10.42.1.50", "o1")
	o2 := reserve(t, other, "custom", "10.42.1.51", "o2")

	h := newLocalHarness(t, state, def, "10.42.1.0/24")
	wantList(t, h.list(), "10.42.1.2 d1/eth0 disk", "10.42.1.200 d2/eth0 disk")

	// A notice naming another data dir: the rest of that directory too.
	n := local("10.42.1.50", "o1")
	n.Network, n.DataDir, n.Bridge = "custom", other+"/", "br-custom"
	if code, body := h.post(n); code != 204 {
		t.Fatalf("POST: %d %s", code, body)
	}
	wantList(t, h.list(), "10.42.1.2 d1/eth0 disk", "10.42.1.50 o1/eth0 notice", "10.42.1.51 o2/eth0 disk", "10.42.1.200 d2/eth0 disk")

	// Restarted: everything is back from disk, with the bridge the
	// notices named.
	h2 := newLocalHarness(t, state, def, "10.42.1.0/24")
	wantList(t, h2.list(), "10.42.1.2 d1/eth0 disk", "10.42.1.50 o1/eth0 disk", "10.42.1.51 o2/eth0 disk", "10.42.1.200 d2/eth0 disk")
	for _, e := range h2.set.list() {
		if e.IP == "10.42.1.51" && (e.Bridge != "br-custom" || e.MAC != "0a:58:0a:2a:01:33" || e.DataDir != other) {
			t.Fatalf("rebuilt entry %+v: want bridge br-custom, MAC 0a:58:0a:2a:01:33, data_dir %s", e, other)
		}
	}
	// Released while nobody told the daemon (it was down during DEL).
	release(t, other, "custom", o2)
	wantList(t, h2.list(), "10.42.1.2 d1/eth0 disk", "10.42.1.50 o1/eth0 disk", "10.42.1.200 d2/eth0 disk")
	// A block that moves takes the old block's entries away.
	h2.mu.Lock()
	h2.prefixes = []netip.Prefix{netip.MustParsePrefix("10.42.9.0/24")}
	h2.mu.Unlock()
	wantList(t, h2.list(), "10.42.9.2 elsewhere/eth0 disk")

	b, err := os.ReadFile(filepath.Join(state, localStoresFile))
	if err != nil || !strings.Contains(string(b), `"data_dir": "`+other+`"`) || !strings.Contains(string(b), `"bridge": "br-custom"`) {
		t.Fatalf("%s: %v\n%s", localStoresFile, err, b)
	}
}

// Notices that arrive while a scan reads the directories win over what it
// read: a container reported then stays, one deleted then is not read
// back. The next scan brings the list back to the directories.
func TestLocalReconcileRace(t *testing.T) {
	def := t.TempDir()
	reserve(t, def, "drover", "10.42.1.2", "a")
	reserve(t, def, "drover", "10.42.1.3", "b")
	h := newLocalHarness(t, "", def, "10.42.1.0/24")
	wantList(t, h.list(), "10.42.1.2 a/eth0 disk", "10.42.1.3 b/eth0 disk")

	// b's notice names the directory, so c's below is no news that would
	// start a scan of its own.
	nb := local("10.42.1.3", "b")
	nb.DataDir = def
	if code, body := h.post(nb); code != 204 {
		t.Fatalf("POST: %d %s", code, body)
	}
	n := local("10.42.1.4", "c")
	n.DataDir = def
	h.set.scanning = func() {
		h.set.scanning = nil
		if err := h.set.add(n); err != nil {
			t.Error(err)
		}
		h.set.remove(netip.MustParseAddr("10.42.1.2"))
	}
	wantList(t, h.list(), "10.42.1.3 b/eth0 notice", "10.42.1.4 c/eth0 notice")
	// The directories say .2 is still reserved and .4 is not.
	wantList(t, h.list(), "10.42.1.2 a/eth0 disk", "10.42.1.3 b/eth0 notice")
}

// A data_dir owned by another user is refused: its owner could plant
// reservations the daemon would list as local containers.
func TestLocalDataDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user: sudo go test ./cmd/drover/")
	}
	h := newLocalHarness(t, "", t.TempDir(), "10.42.1.0/24")
	dir := t.TempDir()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	l := local("10.42.1.5", "c1")
	l.DataDir = dir
	if code, body := h.post(l); code != 400 || !strings.Contains(body, "data_dir "+dir+" is not owned by the daemon's user (uid 0)") {
		t.Fatalf("got %d %q, want 400 naming the owner", code, body)
	}
}

// The daemon remembers at most maxLocalStores reservation directories: a
// notice naming one more is refused with 409 (and not recorded), while
// notices for the known ones still go through. A restarted daemon reads
// them back, forgetting those that are gone or no longer pass the checks.
func TestLocalStoresBounded(t *testing.T) {
	state, def, dataDir := t.TempDir(), t.TempDir(), t.TempDir()
	h := newLocalHarness(t, state, def, "10.42.1.0/24")
	notice := func(i int) cni.Local {
		l := local(fmt.Sprintf("10.42.1.%d", 10+i), fmt.Sprintf("c%d", i))
		l.Network, l.DataDir = fmt.Sprintf("net%d", i), dataDir
		return l
	}
	for i := range maxLocalStores + 1 { // what ADD reserved before each notice
		reserve(t, dataDir, fmt.Sprintf("net%d", i), fmt.Sprintf("10.42.1.%d", 10+i), fmt.Sprintf("c%d", i))
	}
	for i := range maxLocalStores {
		if code, body := h.post(notice(i)); code != 204 {
			t.Fatalf("POST store %d: %d %s", i, code, body)
		}
	}
	code, body := h.post(notice(maxLocalStores))
	if want := "data_dir " + dataDir + " network net16 would be the 17th, the daemon remembers at most 16"; code != http.StatusConflict || !strings.Contains(body, want) {
		t.Fatalf("POST store 17: got %d %q, want 409 containing %q", code, body, want)
	}
	if code, body := h.post(local("10.42.1.99", "nodir")); code != 204 { // no data_dir: no store
		t.Fatalf("POST without data_dir: %d %s", code, body)
	}
	again := notice(3)
	again.Bridge = "br3"
	if code, body := h.post(again); code != 204 {
		t.Fatalf("POST to a known store: %d %s", code, body)
	}
	// The 16 known stores and the notice without one; net16's reservation
	// is in no directory the daemon reads.
	if got := h.list(); len(got) != maxLocalStores+1 || slices.Contains(got, "10.42.1.26 c16/eth0 disk") {
		t.Fatalf("GET /v1/local: got %q, want %d entries without net16's", got, maxLocalStores+1)
	}
	b, err := os.ReadFile(filepath.Join(state, localStoresFile))
	if err != nil || strings.Count(string(b), `"data_dir"`) != maxLocalStores || strings.Contains(string(b), "net16") {
		t.Fatalf("%s: %v: want %d stores, not net16:\n%s", localStoresFile, err, maxLocalStores, b)
	}

	// Restart with a hand-made list: two good records, one whose
	// directory is gone, one in a world-writable data_dir, two that were
	// never valid.
	if err := os.RemoveAll(filepath.Join(dataDir, "net5")); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	if err := os.Chmod(bad, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(bad, "net0"), 0o700); err != nil {
		t.Fatal(err)
	}
	recs := []storeRecord{
		{storeKey{DataDir: dataDir, Network: "net0"}, "br0"},
		{storeKey{DataDir: dataDir, Network: "net3"}, ""},
		{storeKey{DataDir: dataDir, Network: "net5"}, ""},
		{storeKey{DataDir: bad, Network: "net0"}, ""},
		{storeKey{DataDir: "relative", Network: "net0"}, ""},
		{storeKey{DataDir: dataDir + "/../" + filepath.Base(dataDir), Network: "net0"}, ""},
	}
	b, _ = json.Marshal(recs)
	if err := os.WriteFile(filepath.Join(state, localStoresFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	h2 := newLocalHarness(t, state, def, "10.42.1.0/24")
	h2.set.mu.Lock()
	got := slices.Collect(maps.Keys(h2.set.stores))
	h2.set.mu.Unlock()
	slices.SortFunc(got, func(a, b storeKey) int { return strings.Compare(a.Network, b.Network) })
	if want := []storeKey{{DataDir: dataDir, Network: "net0"}, {DataDir: dataDir, Network: "net3"}}; !slices.Equal(got, want) {
		t.Fatalf("stores after restart: got %v, want %v", got, want)
	}
	wantList(t, h2.list(), "10.42.1.10 c0/eth0 disk", "10.42.1.13 c3/eth0 disk")
}

// A reservation directory that stays unreadable is retried on every GET
// /v1/local; the warning is not repeated each time.
func TestLocalUnreadableLogRateLimited(t *testing.T) {
	def := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(def, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var mu sync.Mutex
	set := newLocalSet(func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")} },
		t.TempDir(), def, slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return buf.Write(p)
		}), nil)))
	mux := http.NewServeMux()
	set.register(mux)
	for range 200 {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/local", nil))
	}
	mu.Lock()
	n := strings.Count(buf.String(), "reading the CNI reservation directories")
	mu.Unlock()
	if n < 1 || n > 3 {
		t.Fatalf("201 reconciles of an unreadable directory: got %d warnings, want 1..3", n)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A container on a bridge other than node.bridge is accepted, with a
// warning: the forward filter trusts only node.bridge.
func TestLocalUntrustedBridgeWarns(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	set := newLocalSet(func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")} },
		"", t.TempDir(), slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return buf.Write(p)
		}), nil)))
	set.trustedBridge = "drover-br0"
	for _, tc := range []struct {
		bridge, uplink string
		warn           bool
	}{{"drover-br0", "", false}, {"cni0", "", true}, {"drover-lan0", "eth1", false}} {
		mu.Lock()
		buf.Reset()
		mu.Unlock()
		// An uplink container's frames are bridged onto the LAN, never
		// routed: the forward filter's bridge is not its concern.
		err := set.add(cni.Local{IP: "10.42.1.5", ContainerID: "c1", IfName: "eth0", Network: "n", Bridge: tc.bridge, Uplink: tc.uplink})
		if err != nil {
			t.Fatalf("bridge %s: add: %v", tc.bridge, err)
		}
		mu.Lock()
		got := strings.Contains(buf.String(), "does not trust")
		mu.Unlock()
		if got != tc.warn {
			t.Errorf("bridge %s: warned %v, want %v", tc.bridge, got, tc.warn)
		}
	}
}

// In cluster mode a reserved address inside the cluster CIDR but outside
// the node's prefixes (a block it lost) is stranded: listed for status and
// the metric, logged once when it appears and once when its container is
// gone; addresses outside the cluster CIDR are not the cluster's business.
func TestLocalStranded(t *testing.T) {
	state, def := t.TempDir(), t.TempDir()
	reserve(t, def, "drover", "10.42.1.2", "kept")
	lost := reserve(t, def, "drover", "10.42.1.3", "lost")
	reserve(t, def, "drover", "192.168.7.2", "foreign")
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}
	var pmu sync.Mutex
	set := newLocalSet(func() []netip.Prefix { pmu.Lock(); defer pmu.Unlock(); return slices.Clone(prefixes) }, state, def, log)
	set.cluster = netip.MustParsePrefix("10.42.0.0/16")
	if err := set.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := set.strandedList(); len(got) != 0 {
		t.Fatalf("holding the block: stranded %v, want none", got)
	}
	// The block is lost; none claimed yet (no quorum): both stranded.
	pmu.Lock()
	prefixes = nil
	pmu.Unlock()
	if err := set.reconcile(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range set.strandedList() {
		got = append(got, a.IP+" "+a.ContainerID+"/"+a.IfName+" "+a.Network)
	}
	if want := []string{"10.42.1.2 kept/eth0 drover", "10.42.1.3 lost/eth0 drover"}; !slices.Equal(got, want) {
		t.Fatalf("block lost: stranded %q, want %q", got, want)
	}
	// A new block: the old addresses stay stranded; one container goes.
	pmu.Lock()
	prefixes = []netip.Prefix{netip.MustParsePrefix("10.42.5.0/24")}
	pmu.Unlock()
	release(t, def, "drover", lost)
	for range 2 {
		if err := set.reconcile(); err != nil {
			t.Fatal(err)
		}
	}
	if got := set.strandedList(); len(got) != 1 || got[0].IP != "10.42.1.2" {
		t.Fatalf("after a new block and one DEL: stranded %v, want only 10.42.1.2", got)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if n := strings.Count(out, "container stranded"); n != 2 {
		t.Fatalf("logged %d stranded lines, want one per address (2):\n%s", n, out)
	}
	if !strings.Contains(out, "stranded container gone") || !strings.Contains(out, "container_id=lost") {
		t.Fatalf("log does not name the stranded containers and the one gone:\n%s", out)
	}
	var w strings.Builder
	_ = metrics.Write(&w, router.Status{Stranded: set.strandedList()})
	if !strings.Contains(w.String(), "\ndrover_stranded_addresses 1\n") {
		t.Fatalf("metrics lack drover_stranded_addresses 1:\n%s", w.String())
	}
}

// An uplink-model container's address is the LAN's: accepted outside the
// node's prefixes, and its metadata record carries what ADD configured.
func TestLocalUplinkRecord(t *testing.T) {
	h := newLocalHarness(t, "", t.TempDir(), "10.42.1.0/24")
	lan := local("192.168.50.20", "u")
	if code, _ := h.post(lan); code != 400 {
		t.Fatalf("a LAN address without uplink: got %d, want 400", code)
	}
	lan.Uplink, lan.PrefixLen, lan.Gateway, lan.MTU, lan.Network = "eth1", 24, "192.168.50.1", 1500, "lan"
	if code, body := h.post(lan); code != 204 {
		t.Fatalf("POST uplink container: %d %s", code, body)
	}
	r, ok := h.set.record("h1", netip.MustParseAddr("192.168.50.20"))
	want := metadata.Record{Address: "192.168.50.20/24", Gateway: "192.168.50.1", MTU: 1500, Host: "h1", Network: "lan",
		Interface: "eth0", MAC: "0a:58:0a:2a:01:05", ContainerID: "u"}
	if !ok || r != want {
		t.Errorf("record: got %+v %v, want %+v", r, ok, want)
	}
	if _, ok := h.set.record("h1", netip.MustParseAddr("192.168.50.21")); ok {
		t.Error("a record for an address no container holds")
	}
	bad := lan
	bad.PrefixLen = 33
	if code, body := h.post(bad); code != 400 || !strings.Contains(body, "prefix_len") {
		t.Errorf("prefix_len 33: got %d %q, want 400 naming it", code, body)
	}
}

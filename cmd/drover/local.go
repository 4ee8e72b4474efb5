package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drovernet/drover/cni"
	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/metadata"
	"github.com/drovernet/drover/router"
)

// The daemon's list of this host's containers, which the CNI plugin
// reports on the control socket (cni/daemon.go is the client):
//
//	POST   /v1/local       an attachment appeared (cni.Local as JSON)
//	DELETE /v1/local/{ip}  it is gone
//	GET    /v1/local       the list, as a JSON array sorted by address
//
// The notices are best effort (an ADD while the daemon is down goes on
// without one), and the plugin's reservation directories are the truth. So
// the list is rebuilt from them when the daemon starts and reconciled with
// them on every GET: the directories under ipam.DefaultDataDir, and every
// other ipam.dataDir a notice named (remembered in state_dir, so a
// restarted daemon knows them too). A notice is never undone by a scan
// that began before it arrived (seq): a container reported while its
// directory was being read stays, and one deleted then is not read back.

// localStoresFile, in state_dir, lists the reservation directories the
// daemon has heard of, with the bridge their notices named.
const localStoresFile = "cni-stores.json"

// Bounds on what a POST /v1/local can make the daemon hold. The control
// socket is root's only, so these guard against a confused or buggy client
// rather than an attacker: every value sent ends up in memory, and every new
// reservation directory in state_dir and in each reconcile's scan.
const (
	maxLocalBody = 64 << 10 // bytes of one POST body
	// maxLocalStores is how many reservation directories (data_dir and
	// network) the daemon remembers; a notice naming one more is refused
	// (409). A host has one per drover network: 16 is plenty.
	maxLocalStores = 16
	maxDataDirLen  = 512 // bytes of data_dir
	maxIDLen       = 256 // bytes of container_id (the runtime's ID: 64 hex digits)
	maxIfNameLen   = 15  // IFNAMSIZ-1: ifname and bridge
)

// errTooManyStores: the notice names a reservation directory beyond
// maxLocalStores.
var errTooManyStores = errors.New("too many CNI reservation directories")

// localEntry is one item of GET /v1/local.
type localEntry struct {
	cni.Local
	// Source is "notice" (POST /v1/local) or "disk" (read from the
	// reservation directory).
	Source string `json:"source"`

	seq uint64 // when it was set, for reconcile
}

// storeKey names a reservation directory: ipam.dataDir and the network.
type storeKey struct {
	DataDir string `json:"data_dir"`
	Network string `json:"network"`
}

type storeRecord struct {
	storeKey
	Bridge string `json:"bridge,omitempty"`
}

// localSet is the daemon's list of local containers. Its methods may be
// called from any goroutine.
type localSet struct {
	prefixes       func() []netip.Prefix
	stateFile      string // "": known directories are not remembered
	defaultDataDir string
	log            *slog.Logger
	// scanning, when set (tests only), runs in reconcile between taking
	// its snapshot and reading the directories: requests that arrive then
	// must win over what the scan read.
	scanning func()
	// trustedBridge is the bridge the forward filter trusts (node.bridge
	// with the filter on; "" otherwise): a container on another bridge
	// cannot route through the host, which a notice then warns about.
	trustedBridge string
	// cluster is the cluster CIDR (cluster mode; invalid otherwise): a
	// reserved address inside it but outside this node's prefixes is a
	// container left with an address of a block the node lost (stranded).
	cluster netip.Prefix
	// onChange, when set, runs after every change of the list (network
	// policy follows this host's pods), outside the lock.
	onChange func()

	scanMu sync.Mutex // one reconcile at a time

	mu      sync.Mutex
	seq     uint64
	entries map[netip.Addr]localEntry
	deleted map[netip.Addr]uint64 // seq of DELETEs a running reconcile must not undo
	stores  map[storeKey]string   // → bridge
	// stranded: reserved addresses of this host's containers that lie in
	// the cluster CIDR but in none of its prefixes, as the last reconcile
	// found them.
	stranded map[netip.Addr]cni.Local
}

// newLocalSet returns the list for a node whose prefixes are those
// prefixes returns (read at each request: in cluster mode the block comes
// later), remembering reservation directories in stateDir ("" : not), and
// fills it from the directories it knows. A directory it cannot read is
// logged and retried at the next reconcile.
func newLocalSet(prefixes func() []netip.Prefix, stateDir, defaultDataDir string, log *slog.Logger) *localSet {
	s := &localSet{
		prefixes:       prefixes,
		defaultDataDir: defaultDataDir,
		// Rate-limited: a directory that stays unreadable is retried on
		// every notice and every GET /v1/local.
		log:      ratelog.New(log.With("component", "local"), 0, 0),
		entries:  map[netip.Addr]localEntry{},
		deleted:  map[netip.Addr]uint64{},
		stores:   map[storeKey]string{},
		stranded: map[netip.Addr]cni.Local{},
	}
	if stateDir != "" {
		s.stateFile = filepath.Join(stateDir, localStoresFile)
		s.loadStores()
	}
	if err := s.reconcile(); err != nil {
		s.log.Warn("reading the CNI reservation directories", "err", err)
	}
	if n := s.len(); n > 0 {
		s.log.Info("local containers from the reservation directories", "count", n)
	}
	return s
}

// routerPrefixes returns r's prefixes (its block, in cluster mode once
// claimed).
func routerPrefixes(r *router.Router) func() []netip.Prefix {
	return func() []netip.Prefix {
		var out []netip.Prefix
		for _, p := range r.Status().Prefixes {
			if pf, err := netip.ParsePrefix(p); err == nil {
				out = append(out, pf.Masked())
			}
		}
		return out
	}
}

func (s *localSet) loadStores() {
	b, err := os.ReadFile(s.stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var recs []storeRecord
	if err == nil {
		err = json.Unmarshal(b, &recs)
	}
	if err != nil {
		s.log.Warn("known CNI reservation directories", "file", s.stateFile, "err", err)
		return
	}
	for _, r := range recs {
		// The same checks as a notice's; a directory that is gone, or no
		// longer trustworthy, is forgotten (a notice naming it again brings
		// it back).
		dir, err := cni.StoreDir(r.DataDir, r.Network)
		if err == nil {
			_, err = checkDataDir(r.DataDir)
		}
		if err == nil {
			_, err = os.Stat(dir)
		}
		if err == nil && len(s.stores) >= maxLocalStores {
			err = fmt.Errorf("%w: more than %d", errTooManyStores, maxLocalStores)
		}
		if err != nil {
			s.log.Warn("forgetting a known CNI reservation directory", "file", s.stateFile, "data_dir", r.DataDir, "network", r.Network, "err", err)
			continue
		}
		s.stores[r.storeKey] = r.Bridge
	}
}

// checkDataDir returns dataDir cleaned, or why the daemon will not read
// reservations from it: it must be absolute, clean (a trailing slash
// aside; no "." or ".." elements), at most maxDataDirLen bytes, and an
// existing directory owned by the daemon's user (root) that group and others
// cannot write, so nobody else can plant reservations the daemon would list
// as local containers.
func checkDataDir(dataDir string) (string, error) {
	trimmed := strings.TrimRight(dataDir, "/")
	switch {
	case len(dataDir) > maxDataDirLen:
		return "", fmt.Errorf("data_dir: %d bytes, at most %d", len(dataDir), maxDataDirLen)
	case !filepath.IsAbs(dataDir):
		return "", fmt.Errorf("data_dir %q is not an absolute path", dataDir)
	case trimmed == "" || filepath.Clean(trimmed) != trimmed:
		return "", fmt.Errorf("data_dir %q is not a clean path (no \".\", \"..\" or empty elements, not /)", dataDir)
	}
	fi, err := os.Stat(trimmed)
	if err != nil {
		return "", fmt.Errorf("data_dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return "", fmt.Errorf("data_dir %s is not a directory", trimmed)
	case !ok || int(st.Uid) != os.Geteuid():
		return "", fmt.Errorf("data_dir %s is not owned by the daemon's user (uid %d)", trimmed, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("data_dir %s is mode %04o: group or others may write to it", trimmed, fi.Mode().Perm())
	}
	return trimmed, nil
}

// saveStores writes the known directories; the caller holds mu. A failure
// is logged: the list still works, it only forgets them at a restart.
func (s *localSet) saveStores() {
	if s.stateFile == "" {
		return
	}
	recs := make([]storeRecord, 0, len(s.stores))
	for k, br := range s.stores {
		recs = append(recs, storeRecord{k, br})
	}
	slices.SortFunc(recs, func(a, b storeRecord) int {
		return cmp.Or(cmp.Compare(a.DataDir, b.DataDir), cmp.Compare(a.Network, b.Network))
	})
	b, err := json.MarshalIndent(recs, "", "  ")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(s.stateFile), 0o700)
	}
	if err == nil {
		tmp := s.stateFile + ".tmp"
		if err = os.WriteFile(tmp, append(b, '\n'), 0o600); err == nil {
			err = os.Rename(tmp, s.stateFile)
		}
	}
	if err != nil {
		s.log.Warn("remember CNI reservation directories", "file", s.stateFile, "err", err)
	}
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// errNoBlock: the node has no prefix yet (cluster mode, block not claimed).
var errNoBlock = errors.New("this node has no block yet")

// add records a notice. It returns an error naming the problem for a
// notice the daemon refuses; errNoBlock when no address can be checked yet.
func (s *localSet) add(l cni.Local) error {
	a, err := netip.ParseAddr(l.IP)
	switch {
	case l.IP == "":
		return errors.New("ip: missing")
	case err != nil:
		return fmt.Errorf("ip: %w", err)
	case a.Zone() != "":
		return fmt.Errorf("ip %s: has a zone", l.IP)
	case l.ContainerID == "":
		return errors.New("container_id: missing")
	case len(l.ContainerID) > maxIDLen:
		return fmt.Errorf("container_id: %d bytes, at most %d", len(l.ContainerID), maxIDLen)
	case l.IfName == "":
		return errors.New("ifname: missing")
	case len(l.IfName) > maxIfNameLen:
		return fmt.Errorf("ifname: %d bytes, at most %d", len(l.IfName), maxIfNameLen)
	case len(l.Bridge) > maxIfNameLen:
		return fmt.Errorf("bridge: %d bytes, at most %d", len(l.Bridge), maxIfNameLen)
	case len(l.Uplink) > maxIfNameLen:
		return fmt.Errorf("uplink: %d bytes, at most %d", len(l.Uplink), maxIfNameLen)
	case l.PrefixLen < 0 || l.PrefixLen > 32:
		return fmt.Errorf("prefix_len: %d is not 0..32", l.PrefixLen)
	case l.MTU < 0 || l.MTU > 65535:
		return fmt.Errorf("mtu: %d is not 0..65535", l.MTU)
	}
	if l.Gateway != "" {
		if _, err := netip.ParseAddr(l.Gateway); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if why := l.CheckPod(); why != "" {
		return errors.New(why)
	}
	if _, err := cni.StoreDir(l.DataDir, l.Network); err != nil {
		return err
	}
	if l.DataDir != "" {
		if l.DataDir, err = checkDataDir(l.DataDir); err != nil {
			return err
		}
	}
	if l.MAC != "" {
		if _, err := net.ParseMAC(l.MAC); err != nil {
			return fmt.Errorf("mac: %w", err)
		}
	}
	if s.trustedBridge != "" && l.Bridge != "" && l.Bridge != s.trustedBridge && l.Uplink == "" {
		s.log.Warn("container attached to a bridge the forward filter does not trust: its routed traffic is dropped; set node.bridge to the CNI bridge",
			"bridge", l.Bridge, "node_bridge", s.trustedBridge, "ip", l.IP)
	}
	// An uplink-model address is the LAN's: in no block, never routed;
	// the daemon keeps it for the metadata service alone.
	if l.Uplink == "" {
		ps := s.prefixes()
		if len(ps) == 0 {
			return errNoBlock
		}
		if !inPrefixes(ps, a) {
			return fmt.Errorf("ip %s is not inside this node's prefixes %v", a, ps)
		}
	}
	l.IP = a.String()
	newStore := false
	s.mu.Lock()
	k := storeKey{DataDir: l.DataDir, Network: l.Network}
	if _, known := s.stores[k]; l.DataDir != "" && !known && len(s.stores) >= maxLocalStores {
		s.mu.Unlock()
		return fmt.Errorf("%w: data_dir %s network %s would be the %dth, the daemon remembers at most %d", errTooManyStores, l.DataDir, l.Network, maxLocalStores+1, maxLocalStores)
	}
	if old, ok := s.entries[a]; ok && (old.ContainerID != l.ContainerID || old.IfName != l.IfName || old.Network != l.Network) {
		// The directory handed the address out again, so the old
		// holder is gone even if its DELETE never came.
		s.log.Warn("local address changed hands", "ip", a, "was", old.ContainerID+"/"+old.IfName, "now", l.ContainerID+"/"+l.IfName)
	}
	s.seq++
	s.entries[a] = localEntry{Local: l, Source: "notice", seq: s.seq}
	delete(s.deleted, a)
	if l.DataDir != "" {
		br, known := s.stores[k]
		if !known || br != l.Bridge {
			s.stores[k] = l.Bridge
			s.saveStores()
			newStore = !known
		}
	}
	s.mu.Unlock()
	if newStore {
		// Its other containers may predate this daemon.
		if err := s.reconcile(); err != nil {
			s.log.Warn("reading the CNI reservation directories", "err", err)
		}
	}
	s.changed()
	return nil
}

func (s *localSet) changed() {
	if s.onChange != nil {
		s.onChange()
	}
}

// remove records that a is gone; removing an address the list does not
// hold succeeds (DEL and GC repeat).
func (s *localSet) remove(a netip.Addr) {
	s.mu.Lock()
	s.seq++
	s.deleted[a] = s.seq
	delete(s.entries, a)
	s.mu.Unlock()
	s.changed()
}

func (s *localSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// list returns the entries in address order.
func (s *localSet) list() []localEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]localEntry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b localEntry) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	return out
}

// reconcile makes the list agree with the reservation directories it
// knows: an address reserved there and inside the node's prefixes is
// listed with its owner, an entry of such a directory that is not reserved
// (or reserved for someone else) goes, as does an entry outside the
// prefixes. Entries set after the scan began, and addresses deleted after
// it began, are left as the notices made them. Entries of a directory that
// could not be read, or that no notice named (an older plugin), stay. The
// errors of unreadable directories are returned together.
func (s *localSet) reconcile() error {
	defer s.changed()
	ps := s.prefixes()
	if len(ps) == 0 && !s.cluster.IsValid() {
		return nil // nothing can be told local yet
	}
	// In cluster mode a node without a block (one lost, none claimed
	// yet) still scans: its reserved addresses are all stranded.
	s.scanMu.Lock()
	defer s.scanMu.Unlock()

	s.mu.Lock()
	start := s.seq
	bridges := make(map[storeKey]string, len(s.stores))
	for k, br := range s.stores {
		bridges[k] = br
	}
	s.mu.Unlock()
	if s.scanning != nil {
		s.scanning()
	}
	var errs []error
	def := filepath.Clean(cmp.Or(s.defaultDataDir, ipam.DefaultDataDir))
	nets, err := cni.Networks(def)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range nets {
		k := storeKey{DataDir: def, Network: n}
		if _, ok := bridges[k]; !ok {
			bridges[k] = ""
		}
	}
	covered := map[storeKey]bool{}
	disk := map[netip.Addr]cni.Local{}
	stranded := map[netip.Addr]cni.Local{}
	for k, br := range bridges {
		ls, err := cni.Reserved(k.DataDir, k.Network)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", k.DataDir, k.Network, err))
			continue
		}
		covered[k] = true
		for _, l := range ls {
			a, err := netip.ParseAddr(l.IP)
			if err != nil {
				continue
			}
			if l.Uplink == "" && !inPrefixes(ps, a) {
				// A block this node no longer holds (lost to an
				// earlier claim): the container keeps an address
				// another host now hands out.
				if s.cluster.IsValid() && s.cluster.Contains(a) {
					stranded[a] = l
				}
				continue
			}
			l.Bridge = br
			disk[a] = l
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for a, e := range s.entries {
		if e.seq > start {
			continue
		}
		if e.Uplink == "" && !inPrefixes(ps, a) {
			delete(s.entries, a)
			continue
		}
		// A notice without data_dir (an older plugin) names no
		// directory: it stands until its DELETE.
		if !covered[storeKey{DataDir: e.DataDir, Network: e.Network}] {
			continue
		}
		if d, ok := disk[a]; !ok || d.ContainerID != e.ContainerID || d.IfName != e.IfName || d.Network != e.Network {
			delete(s.entries, a)
		}
	}
	for a, l := range disk {
		if _, ok := s.entries[a]; ok || s.deleted[a] > start {
			continue
		}
		s.seq++
		s.entries[a] = localEntry{Local: l, Source: "disk", seq: s.seq}
	}
	for a, q := range s.deleted {
		if q <= start {
			delete(s.deleted, a)
		}
	}
	if len(errs) == 0 {
		s.setStranded(stranded)
	}
	return errors.Join(errs...)
}

// localRescan is how often a cluster-mode daemon rereads the reservation
// directories for stranded containers.
const localRescan = 5 * time.Second

// rescanEvery reconciles every d until the returned stop is called (it
// waits for a running reconcile to end).
func (s *localSet) rescanEvery(d time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if err := s.reconcile(); err != nil {
					s.log.Warn("reading the CNI reservation directories", "err", err)
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

// setStranded replaces the stranded list (s.mu held), logging each address
// once when it becomes stranded and once when it is gone.
func (s *localSet) setStranded(now map[netip.Addr]cni.Local) {
	for a, l := range now {
		if _, known := s.stranded[a]; !known {
			s.log.Warn("container stranded: its address lies in a block this host no longer holds, which another host hands out; recreate the container (drover status)",
				"ip", a, "container_id", l.ContainerID, "ifname", l.IfName, "network", l.Network)
		}
	}
	for a, l := range s.stranded {
		if _, still := now[a]; !still {
			s.log.Info("stranded container gone", "ip", a, "container_id", l.ContainerID)
		}
	}
	s.stranded = now
}

// strandedList returns the stranded containers in address order.
func (s *localSet) strandedList() []router.StrandedAddr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]router.StrandedAddr, 0, len(s.stranded))
	for a, l := range s.stranded {
		out = append(out, router.StrandedAddr{IP: a.String(), ContainerID: l.ContainerID, IfName: l.IfName, Network: l.Network})
	}
	slices.SortFunc(out, func(x, y router.StrandedAddr) int {
		return netip.MustParseAddr(x.IP).Compare(netip.MustParseAddr(y.IP))
	})
	return out
}

// register adds the /v1/local handlers to the control socket's mux.
func (s *localSet) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/local", s.handleList)
	mux.HandleFunc("POST /v1/local", s.handleAdd)
	mux.HandleFunc("DELETE /v1/local/{ip}", s.handleRemove)
}

func (s *localSet) handleList(w http.ResponseWriter, _ *http.Request) {
	if err := s.reconcile(); err != nil {
		s.log.Warn("reading the CNI reservation directories", "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.list())
}

func (s *localSet) handleAdd(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLocalBody))
	if err != nil {
		http.Error(w, "POST /v1/local: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	// Unknown fields are accepted: a newer plugin may send more.
	var l cni.Local
	if err := json.Unmarshal(b, &l); err != nil {
		http.Error(w, "POST /v1/local: body is not a local container (JSON object): "+err.Error(), http.StatusBadRequest)
		return
	}
	switch err := s.add(l); {
	case errors.Is(err, errNoBlock):
		http.Error(w, "POST /v1/local: "+err.Error()+": try again once it has claimed one", http.StatusServiceUnavailable)
	case errors.Is(err, errTooManyStores):
		http.Error(w, "POST /v1/local: "+err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, "POST /v1/local: "+err.Error(), http.StatusBadRequest)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *localSet) handleRemove(w http.ResponseWriter, r *http.Request) {
	a, err := netip.ParseAddr(r.PathValue("ip"))
	if err != nil {
		http.Error(w, "DELETE /v1/local/{ip}: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.remove(a)
	w.WriteHeader(http.StatusNoContent)
}

// record is the metadata service's view of the local container holding
// ip (package metadata).
func (s *localSet) record(node string, ip netip.Addr) (metadata.Record, bool) {
	s.mu.Lock()
	e, ok := s.entries[ip]
	s.mu.Unlock()
	if !ok {
		return metadata.Record{}, false
	}
	r := metadata.Record{Address: ip.String(), Gateway: e.Gateway, MTU: e.MTU, Host: node, Network: e.Network,
		Interface: e.IfName, MAC: e.MAC, ContainerID: e.ContainerID, PodNamespace: e.PodNamespace, PodName: e.PodName}
	if e.PrefixLen > 0 {
		r.Address = netip.PrefixFrom(ip, e.PrefixLen).String()
	}
	return r, true
}

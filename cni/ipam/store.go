package ipam

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrFull means every address of the pool is reserved.
var ErrFull = errors.New("ipam: no free address")

// DefaultDataDir holds one Store directory per network.
const DefaultDataDir = "/var/lib/cni/drover"

// Names inside a store directory besides the reservations.
const (
	lockName   = "lock"
	lastName   = "last_reserved_ip"
	tmpPrefix  = ".tmp-"
	maxOwnerID = 1024 // bytes; CNI container IDs are far shorter
)

// Owner is the attachment an address is reserved for: the CNI
// (CNI_CONTAINERID, CNI_IFNAME) pair. Field names are part of the on-disk
// format (the daemon reads it): only add fields.
type Owner struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func (o Owner) String() string { return o.ContainerID + "/" + o.IfName }

func (o Owner) validate() error {
	if o.ContainerID == "" || o.IfName == "" {
		return fmt.Errorf("ipam: owner %q: container ID and interface name are required", o)
	}
	if len(o.ContainerID) > maxOwnerID || len(o.IfName) > maxOwnerID {
		return fmt.Errorf("ipam: owner %.40q…: too long", o)
	}
	return nil
}

// Pod is the Kubernetes pod an attachment belongs to, as the runtime
// passes it in CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME); zero outside
// Kubernetes. Recorded beside the owner, never matched on: network policy
// asks which pod holds an address.
type Pod struct {
	Namespace string `json:"podNamespace,omitempty"`
	Name      string `json:"podName,omitempty"`
	// Labels are what network policy selects the attachment by off
	// Kubernetes (CNI_ARGS DROVER_LABELS, the network's args.cni.labels).
	Labels map[string]string `json:"labels,omitempty"`
	// Ports are the container's named ports (CNI_ARGS DROVER_PORTS), what
	// a policy port given by name resolves to off Kubernetes.
	Ports []NamedPort `json:"ports,omitempty"`
	// The attachment's network as ADD configured it, for the daemon's
	// metadata service (which rereads reservations after a restart): the
	// prefix length of the container's address, its gateway, MTU, and
	// the uplink NIC in the uplink model (docs/cni.md).
	PrefixLen int    `json:"prefixLen,omitempty"`
	Gateway   string `json:"gateway,omitempty"`
	MTU       int    `json:"mtu,omitempty"`
	Uplink    string `json:"uplink,omitempty"`
}

// NamedPort is a named container port: "http", 8080, "TCP".
type NamedPort struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}

// record is a reservation file's content.
type record struct {
	Owner
	Pod
}

// Reservation is one reserved address and its owner.
type Reservation struct {
	Addr  netip.Addr
	Owner Owner
	Pod   Pod
	// Unreadable is set when the file could not be parsed (written by
	// hand or by another tool: the store itself never publishes a partial
	// file). Its owner is unknown, so it matches no attachment and GC
	// releases it; until then the address stays reserved.
	Unreadable bool
}

// Store is a reservation directory. Its methods may be called from any
// number of goroutines and processes at once: each takes the directory's
// flock for its whole duration.
type Store struct {
	dir string

	// crash, when set (tests only), is called at each step of a
	// reservation; a test child process kills itself there to prove that
	// a crash at that point leaves no duplicate.
	crash func(point string)
}

// Open returns the store in dir, creating the directory (0700) if needed.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("ipam: empty store directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// OpenExisting returns the store in dir without creating it: an error
// wrapping fs.ErrNotExist if there is none. Readers that only look (the
// daemon) use it, so a stray path never becomes a directory.
func OpenExisting(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("ipam: empty store directory")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: store %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("ipam: store %s: not a directory", dir)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// lock takes the store's flock (unix.LOCK_EX or LOCK_SH) on a fresh open
// file description, so that two Stores in one process exclude each other as
// two processes do. The returned func releases it.
func (s *Store) lock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ipam: lock %s: %w", s.dir, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ipam: flock %s: %w", s.dir, err)
	}
	// Closing the descriptor drops the lock (and so does the kernel when
	// the process dies).
	return func() { f.Close() }, nil
}

// Allocate reserves a free address of pool for o and returns it, durably
// recorded before it returns. If o already holds an address inside the pool
// (an ADD retried after a crash), that address is returned again. It returns
// an error wrapping ErrFull when the pool is exhausted.
func (s *Store) Allocate(pool Pool, o Owner) (netip.Addr, error) {
	return s.AllocateFor(pool, o, Pod{})
}

// AllocateFor is Allocate recording the pod the attachment belongs to.
func (s *Store) AllocateFor(pool Pool, o Owner, pod Pod) (netip.Addr, error) {
	if err := o.validate(); err != nil {
		return netip.Addr{}, err
	}
	if err := pool.Validate(); err != nil {
		return netip.Addr{}, err
	}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	s.removeTemps()

	rs, err := s.list()
	if err != nil {
		return netip.Addr{}, err
	}
	taken := make(map[netip.Addr]bool, len(rs)+len(pool.Exclude))
	for _, r := range rs {
		if !r.Unreadable && r.Owner == o && pool.contains(r.Addr) {
			return r.Addr, nil
		}
		taken[r.Addr] = true
	}
	for _, a := range pool.Exclude {
		taken[a] = true
	}
	start, end := pool.bounds()
	first := start
	if last, ok := s.last(); ok && pool.contains(last) && last != end {
		first = last.Next()
	}
	a := first
	for {
		if !taken[a] {
			ok, err := s.reserve(a, record{o, pod})
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				s.setLast(a)
				return a, nil
			}
		}
		if a == end {
			a = start
		} else {
			a = a.Next()
		}
		if a == first {
			return netip.Addr{}, fmt.Errorf("%w in %s: all %d addresses are reserved", ErrFull, pool, pool.Size())
		}
	}
}

// reserve publishes the reservation of a for o: temporary file, fsync, link
// into place (fails if the name exists), fsync the directory. It returns
// false if the address turned out to be taken.
func (s *Store) reserve(a netip.Addr, rec record) (bool, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	body = append(body, '\n')
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("ipam: reserve %s: %w", a, err)
	}
	defer os.Remove(tmp) // after the link, only the name goes away
	if _, err := f.Write(body); err != nil {
		f.Close()
		return false, fmt.Errorf("ipam: reserve %s: %w", a, err)
	}
	s.crashPoint("written")
	if err := f.Sync(); err != nil {
		f.Close()
		return false, fmt.Errorf("ipam: reserve %s: fsync: %w", a, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("ipam: reserve %s: %w", a, err)
	}
	s.crashPoint("synced")
	if err := os.Link(tmp, filepath.Join(s.dir, a.String())); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("ipam: reserve %s: %w", a, err)
	}
	s.crashPoint("linked")
	if err := s.syncDir(); err != nil {
		// The reservation may not survive a power loss: take it back so
		// the caller never configures an address that could vanish.
		os.Remove(filepath.Join(s.dir, a.String()))
		return false, fmt.Errorf("ipam: reserve %s: %w", a, err)
	}
	s.crashPoint("durable")
	return true, nil
}

func (s *Store) crashPoint(p string) {
	if s.crash != nil {
		s.crash(p)
	}
}

// Release frees every address o holds and returns them (none: nil, no
// error, so DEL can be repeated).
func (s *Store) Release(o Owner) ([]netip.Addr, error) {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.removeTemps()
	rs, err := s.list()
	if err != nil {
		return nil, err
	}
	var freed []netip.Addr
	for _, r := range rs {
		if r.Unreadable || r.Owner != o {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, r.Addr.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return freed, fmt.Errorf("ipam: release %s: %w", r.Addr, err)
		}
		freed = append(freed, r.Addr)
	}
	if len(freed) > 0 {
		if err := s.syncDir(); err != nil {
			return freed, fmt.Errorf("ipam: release: %w", err)
		}
	}
	return freed, nil
}

// ReleaseReservation frees r.Addr if the store still holds exactly r (same
// owner, or still unreadable), and reports whether it did. GC lists stale
// reservations, undoes what they configured, then releases each this way.
func (s *Store) ReleaseReservation(r Reservation) (bool, error) {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer unlock()
	s.removeTemps()
	cur, ok, err := s.read(r.Addr)
	if err != nil || !ok {
		return false, err
	}
	if cur.Unreadable != r.Unreadable || (!cur.Unreadable && cur.Owner != r.Owner) {
		return false, nil
	}
	if err := os.Remove(filepath.Join(s.dir, r.Addr.String())); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("ipam: release %s: %w", r.Addr, err)
	}
	if err := s.syncDir(); err != nil {
		return true, fmt.Errorf("ipam: release %s: %w", r.Addr, err)
	}
	return true, nil
}

// List returns every reservation, in address order.
func (s *Store) List() ([]Reservation, error) {
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.list()
}

// Lookup returns the addresses o holds, in address order.
func (s *Store) Lookup(o Owner) ([]netip.Addr, error) {
	rs, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, r := range rs {
		if !r.Unreadable && r.Owner == o {
			out = append(out, r.Addr)
		}
	}
	return out, nil
}

// Free counts the addresses of pool that Allocate could still hand out.
func (s *Store) Free(pool Pool) (int, error) {
	if err := pool.Validate(); err != nil {
		return 0, err
	}
	rs, err := s.List()
	if err != nil {
		return 0, err
	}
	used := map[netip.Addr]bool{}
	for _, r := range rs {
		if pool.contains(r.Addr) {
			used[r.Addr] = true
		}
	}
	for _, a := range pool.Exclude {
		if pool.contains(a) {
			used[a] = true
		}
	}
	return pool.Size() - len(used), nil
}

// list reads every reservation; the caller holds the lock.
func (s *Store) list() ([]Reservation, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: read %s: %w", s.dir, err)
	}
	var rs []Reservation
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || a.String() != e.Name() {
			continue // lock, last_reserved_ip, temporaries, anything foreign
		}
		r, ok, err := s.read(a)
		if err != nil {
			return nil, err
		}
		if ok {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(x, y Reservation) int { return x.Addr.Compare(y.Addr) })
	return rs, nil
}

// read returns the reservation of a; ok is false if there is none.
func (s *Store) read(a netip.Addr) (Reservation, bool, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, a.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return Reservation{}, false, nil
	}
	if err != nil {
		return Reservation{}, false, fmt.Errorf("ipam: read reservation %s: %w", a, err)
	}
	r := Reservation{Addr: a}
	dec := json.NewDecoder(bytes.NewReader(b))
	var rec record
	if err := dec.Decode(&rec); err != nil || rec.Owner.validate() != nil {
		r.Unreadable = true
	} else {
		r.Owner, r.Pod = rec.Owner, rec.Pod
	}
	return r, true, nil
}

// removeTemps deletes temporary files: the caller holds the exclusive lock,
// so any that exist were left by a writer that died.
func (s *Store) removeTemps() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

func (s *Store) last() (netip.Addr, bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, lastName))
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	return a, err == nil
}

// setLast records the round-robin hint. Losing it in a crash only moves
// where the next search starts, so it is renamed into place without fsync.
func (s *Store) setLast(a netip.Addr) {
	tmp := filepath.Join(s.dir, tmpPrefix+lastName)
	if os.WriteFile(tmp, []byte(a.String()+"\n"), 0o600) == nil {
		if os.Rename(tmp, filepath.Join(s.dir, lastName)) != nil {
			os.Remove(tmp)
		}
	}
}

func (s *Store) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", s.dir, err)
	}
	return nil
}

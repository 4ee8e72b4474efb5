package gossip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"

	"github.com/drovernet/drover/internal/durable"
)

// AddrBook remembers the gossip addresses of members this node has seen
// alive, in one file, so that a restarted node can rejoin through any of
// them and not only through its configured seeds (a seed that is gone for
// good, a cluster whose seed list was never updated).
type AddrBook struct{ path string }

// MaxBookAddrs bounds the addresses kept: enough to find a cluster again,
// not a copy of a large membership.
const MaxBookAddrs = 32

type addrBookFile struct {
	Version int      `json:"version"`
	Addrs   []string `json:"addrs"`
}

// OpenAddrBook returns the book kept at path; it does not touch the file.
func OpenAddrBook(path string) *AddrBook { return &AddrBook{path: path} }

// Load returns the remembered addresses; none when there is no file. A file
// that does not parse is an error naming it (deleting it loses nothing but
// the memory).
func (b *AddrBook) Load() ([]string, error) {
	raw, err := os.ReadFile(b.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: address book: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f addrBookFile
	if err := dec.Decode(&f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("gossip: address book %s: not a version 1 book (delete it to start afresh)", b.path)
	}
	var out []string
	for _, a := range f.Addrs {
		if _, err := netip.ParseAddrPort(a); err == nil && len(out) < MaxBookAddrs {
			out = append(out, a)
		}
	}
	return out, nil
}

// Save replaces the book with addrs (sorted, at most MaxBookAddrs).
func (b *AddrBook) Save(addrs []string) error {
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if len(addrs) > MaxBookAddrs {
		addrs = addrs[:MaxBookAddrs]
	}
	raw, err := json.MarshalIndent(addrBookFile{Version: 1, Addrs: addrs}, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(b.path, append(raw, '\n')); err != nil {
		return fmt.Errorf("gossip: address book: %w", err)
	}
	return nil
}

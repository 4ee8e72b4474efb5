package lanpool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/drovernet/drover/internal/durable"
)

// Held is a pool a host claims in and its claim there (Valid false: none
// yet).
type Held struct {
	Pool  Pool
	Claim Claim
}

// Store keeps a host's pools and chunk claims in one JSON file, so that a
// restarted host presents the same chunks with the same Since and keeps
// them (as blocks.Store keeps its block).
type Store struct{ path string }

// OpenStore returns a Store for the file at path; it does not touch it.
func OpenStore(path string) *Store { return &Store{path: path} }

const storeVersion = 1

type storeFile struct {
	Version int         `json:"version"`
	Pools   []storeHeld `json:"pools"`
}

type storeHeld struct {
	Network string `json:"network"`
	Start   string `json:"start"`
	End     string `json:"end"`
	Size    int    `json:"chunk_size"`
	Index   *int   `json:"index,omitempty"` // absent: no claim
	Since   int64  `json:"since,omitempty"`
}

// ErrCorrupt reports a state file that exists but cannot be used; deleting
// it makes the host claim anew.
var ErrCorrupt = errors.New("lanpool: corrupt state file")

// Load reads the file; none is no error.
func (s *Store) Load() ([]Held, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lanpool: read state file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f storeFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrCorrupt, s.path, err)
	}
	if f.Version != storeVersion {
		return nil, fmt.Errorf("%w %s: version %d, this build reads %d", ErrCorrupt, s.path, f.Version, storeVersion)
	}
	var out []Held
	for i, h := range f.Pools {
		start, err1 := netip.ParseAddr(h.Start)
		end, err2 := netip.ParseAddr(h.End)
		p := Pool{Network: h.Network, Start: start, End: end, Size: h.Size}
		if err := errors.Join(err1, err2, p.Validate()); err != nil {
			return nil, fmt.Errorf("%w %s: pools[%d]: %w", ErrCorrupt, s.path, i, err)
		}
		held := Held{Pool: p}
		if h.Index != nil {
			if *h.Index < 0 || *h.Index >= p.Len() {
				return nil, fmt.Errorf("%w %s: pools[%d]: index %d outside 0..%d", ErrCorrupt, s.path, i, *h.Index, p.Len()-1)
			}
			held.Claim = Claim{Index: *h.Index, Since: h.Since, Valid: true}
		}
		out = append(out, held)
	}
	return out, nil
}

// Save replaces the file atomically and durably (internal/durable).
func (s *Store) Save(held []Held) error {
	f := storeFile{Version: storeVersion, Pools: []storeHeld{}}
	for _, h := range held {
		sh := storeHeld{Network: h.Pool.Network, Start: h.Pool.Start.String(), End: h.Pool.End.String(), Size: h.Pool.Size}
		if h.Claim.Valid {
			i := h.Claim.Index
			sh.Index, sh.Since = &i, h.Claim.Since
		}
		f.Pools = append(f.Pools, sh)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.Replace(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("lanpool: save %s: %w", s.path, err)
	}
	return nil
}

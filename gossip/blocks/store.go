package blocks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// ErrCorrupt reports a state file that exists but cannot be used. The error
// names the file; deleting it makes the host claim a new block.
var ErrCorrupt = errors.New("blocks: corrupt state file")

// stateVersion is the "version" written to the state file. Load refuses
// other versions rather than guess at their meaning.
const stateVersion = 1

// Store keeps this host's block claim in one JSON file, so that a restarted
// host presents the same block and the same Since and keeps winning the
// conflicts it won before. Save a changed claim before publishing it: a claim
// others have seen but the disk has not would come back after a crash with a
// new, younger Since and could lose its block.
type Store struct {
	path string
}

// state is the file format.
type state struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	Block   string `json:"block"`
	Since   int64  `json:"since"`
}

// Open returns a Store for the file at path. It does not touch the file.
func Open(path string) *Store { return &Store{path: path} }

// Path is the state file's name.
func (s *Store) Path() string { return s.path }

// Load reads the saved claim. ok is false, with no error, when there is no
// file yet (first start). A file that cannot be parsed or holds an invalid
// claim gives an error wrapping ErrCorrupt that names the file.
func (s *Store) Load() (Claim, bool, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Claim{}, false, nil
	}
	if err != nil {
		return Claim{}, false, fmt.Errorf("blocks: read state file: %w", err) // *PathError names the file
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st state
	if err := dec.Decode(&st); err != nil {
		return Claim{}, false, fmt.Errorf("%w %s: %w", ErrCorrupt, s.path, err)
	}
	if dec.More() {
		return Claim{}, false, fmt.Errorf("%w %s: data after the JSON object", ErrCorrupt, s.path)
	}
	if st.Version != stateVersion {
		return Claim{}, false, fmt.Errorf("%w %s: version %d, want %d", ErrCorrupt, s.path, st.Version, stateVersion)
	}
	p, err := netip.ParsePrefix(st.Block)
	if err != nil || p.Masked() != p {
		return Claim{}, false, fmt.Errorf("%w %s: block %q is not a network prefix", ErrCorrupt, s.path, st.Block)
	}
	if st.Node == "" {
		return Claim{}, false, fmt.Errorf("%w %s: empty node name", ErrCorrupt, s.path)
	}
	return Claim{Node: st.Node, Block: p, Since: st.Since}, true, nil
}

// Save replaces the saved claim. The file is written atomically (a temporary
// file in the same directory, fsynced, renamed over the old one, then the
// directory fsynced), so a crash leaves either the old claim or the new one,
// never a torn file, and a claim that Save returned for survives power loss.
// The file is mode 0600; a missing directory is created 0700.
func (s *Store) Save(c Claim) error {
	if c.Node == "" || !c.Block.IsValid() {
		return fmt.Errorf("blocks: save %s: claim %q on %v is not a block claim", s.path, c.Node, c.Block)
	}
	b, err := json.Marshal(state{Version: stateVersion, Node: c.Node, Block: c.Block.Masked().String(), Since: c.Since})
	if err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".tmp*") // created 0600
	if err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil { // explicit: CreateTemp's mode is an implementation detail
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("blocks: save %s: %w", s.path, err)
	}
	ok = true
	// The rename is durable only once the directory entry is on disk.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blocks: save %s: sync directory: %w", s.path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blocks: save %s: sync directory: %w", s.path, err)
	}
	return nil
}

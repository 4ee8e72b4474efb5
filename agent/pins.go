package agent

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/drovernet/drover/internal/durable"
)

// Pins binds node names to identity keys, trust on first use: the first
// identity key seen under a name is written to a file in state_dir, and a
// member that later shows a different key under that name is refused until
// an operator forgets the name (drover forget NAME, or removing its entry
// while the daemon is stopped). Without it, any holder of the cluster key
// could take over a dead member's name, and with it the member's block,
// after the reclaim time (docs/security.md).
//
// Check pins in memory and Flush writes the file, once for all the names
// pinned since the last Flush: the agent flushes once a step. A host that
// meets a hundred members in a start-up storm would otherwise write and
// fsync the file a hundred times in one step, and a hundred hosts doing
// that at once stalled every agent for seconds on a shared disk.
type Pins struct {
	path  string
	mu    sync.Mutex // guards ids, dirty and the file
	ids   map[string][32]byte
	dirty bool // ids holds pins the file does not
}

// MaxPins bounds the names pinned: past it new names are refused (a flood of
// invented names must not grow the file without end).
const MaxPins = 4096

const pinsVersion = 1

type pinsFile struct {
	Version    int               `json:"version"`
	Identities map[string]string `json:"identities"` // name → hex public key
}

// OpenPins loads the pins at path; a missing file is an empty set.
func OpenPins(path string) (*Pins, error) {
	p := &Pins{path: path, ids: map[string][32]byte{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity pins: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f pinsFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("identity pins %s: %w (delete the file to trust every member anew)", path, err)
	}
	if f.Version != pinsVersion {
		return nil, fmt.Errorf("identity pins %s: version %d, want %d", path, f.Version, pinsVersion)
	}
	for name, h := range f.Identities {
		raw, err := hex.DecodeString(h)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("identity pins %s: %q: not 32 hex-encoded bytes", path, name)
		}
		p.ids[name] = [32]byte(raw)
	}
	return p, nil
}

// Check pins id to name if name is new, and says why the member is refused
// ("" if it is not): a different key under a pinned name, or no room.
func (p *Pins) Check(name string, id [32]byte) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if have, ok := p.ids[name]; ok {
		if have == id {
			return ""
		}
		return fmt.Sprintf("identity key %s… differs from the one pinned for %s (%s…): refused; if the host was reinstalled, run `drover forget %s` on this host",
			hex.EncodeToString(id[:4]), name, hex.EncodeToString(have[:4]), name)
	}
	if id == ([32]byte{}) {
		return "no identity key"
	}
	if len(p.ids) >= MaxPins {
		return fmt.Sprintf("%d names pinned already: no room for a new one", MaxPins)
	}
	p.ids[name] = id
	p.dirty = true
	return ""
}

// Flush writes the pins made since the last Flush, if any. On failure they
// stay pinned in memory (this run still refuses another key under those
// names) and the next Flush tries again.
func (p *Pins) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dirty {
		return nil
	}
	if err := p.save(); err != nil {
		return fmt.Errorf("identity pins: %w", err)
	}
	p.dirty = false
	return nil
}

// Forget unpins name: the next identity key seen under it is pinned. It
// reports whether name was pinned.
func (p *Pins) Forget(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	have, ok := p.ids[name]
	if !ok {
		return false, nil
	}
	delete(p.ids, name)
	if err := p.save(); err != nil {
		p.ids[name] = have
		return false, err
	}
	p.dirty = false // the file holds every pin now
	return true, nil
}

// Pinned returns the key pinned for name.
func (p *Pins) Pinned(name string) ([32]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.ids[name]
	return id, ok
}

// save writes the file durably (temporary file, fsync, rename); p.mu held.
func (p *Pins) save() error {
	f := pinsFile{Version: pinsVersion, Identities: make(map[string]string, len(p.ids))}
	for n, id := range p.ids {
		f.Identities[n] = hex.EncodeToString(id[:]) // json sorts map keys
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(p.path, append(b, '\n'))
}

// Package durable replaces files so that a crash or a failure leaves either
// the old content or the new, never a mix, nothing, or a stray temporary
// file: the daemon's identity key, identity pins and sequence-number
// records depend on it, and so does `drover install-cni`, which replaces
// the CNI binary and network config a container runtime reads at any time.
package durable

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode 0600 (Replace with 0600).
func WriteFile(path string, data []byte) error {
	return Replace(path, data, 0o600)
}

// Replace replaces path with data and mode perm: see ReplaceFrom.
func Replace(path string, data []byte, perm os.FileMode) error {
	_, err := ReplaceFrom(path, bytes.NewReader(data), perm)
	return err
}

// ReplaceFrom replaces path with what r yields until EOF, mode perm, and
// returns the number of bytes written. The data goes to a temporary file in
// path's directory (".NAME.tmp" and random digits: no extension a directory
// watcher such as a CNI runtime's picks up, and no clash between two
// writers), which is chmodded to perm, fsynced and renamed over path; then
// the directory is fsynced so the rename itself is on disk. Readers of path
// see the old file or the new one, never a partial one. If anything before
// the rename fails (r returns an error, the disk is full), the temporary
// file is removed and path is untouched. An existing path that is a
// directory is an error (rename fails), not replaced.
func ReplaceFrom(path string, r io.Reader, perm os.FileMode) (int64, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("replace %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Explicit, not through the umask or CreateTemp's 0600.
	if err := f.Chmod(perm); err != nil {
		return 0, fmt.Errorf("replace %s: %w", path, err)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		return n, fmt.Errorf("replace %s: write: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return n, fmt.Errorf("replace %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("replace %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return n, fmt.Errorf("replace %s: %w", path, err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return n, fmt.Errorf("replace %s: sync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return n, fmt.Errorf("replace %s: sync directory: %w", path, err)
	}
	return n, nil
}

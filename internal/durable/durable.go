// Package durable replaces small state files so that a crash leaves either
// the old content or the new, never a mix or nothing: the daemon's identity
// key, identity pins and sequence-number records depend on it.
package durable

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode 0600: a temporary file beside it
// (path + ".tmp"), fsync, rename over path, fsync of the directory so the
// rename itself is on disk.
func WriteFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// maxKeyFile bounds what LoadKey reads: a key is at most 64 hex digits, and
// the rest is whitespace.
const maxKeyFile = 4096

// LoadKey reads the cluster key from path: 16, 24 or 32 bytes (AES-128, -192
// or -256, as memberlist's keyring takes them) written as hex or as base64
// (standard alphabet, padded or not); whitespace anywhere is ignored. Text
// made only of hex digits is read as hex. The file must not be readable or
// writable by group or others (mode 0600 or stricter): a key others can read
// lets them join the cluster and derive its ESP keys.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gossip: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat() // of the file opened, not of whatever path names now
	if err != nil {
		return nil, fmt.Errorf("gossip: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("gossip: key file %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("gossip: key file %s: mode %04o lets group or others access it; want 0600 or stricter (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("gossip: key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("gossip: key file %s: longer than %d bytes, not a key", path, maxKeyFile)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("gossip: key file %s: %w", path, err)
	}
	return k, nil
}

// ParseKey decodes a cluster key as LoadKey reads it from a file.
func ParseKey(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	if s == "" {
		return nil, fmt.Errorf("empty key")
	}
	var k []byte
	if isHex(s) {
		var err error
		if k, err = hex.DecodeString(s); err != nil {
			return nil, fmt.Errorf("hex key: %w", err)
		}
	} else {
		var err error
		if k, err = base64.StdEncoding.DecodeString(s); err != nil {
			var err2 error
			if k, err2 = base64.RawStdEncoding.DecodeString(s); err2 != nil {
				return nil, fmt.Errorf("key is neither hex nor base64: %w", err)
			}
		}
	}
	if err := checkKey(k); err != nil {
		return nil, err
	}
	return k, nil
}

func isHex(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("key is %d bytes, want 16, 24 or 32", len(k))
}

// GenerateKey returns a new random 32-byte cluster key (AES-256).
func GenerateKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("gossip: generate key: %w", err)
	}
	return k, nil
}

// FormatKey writes k as LoadKey reads it: standard padded base64. For 16-
// and 32-byte keys that ends in '=', so it never reads as hex; the 32
// characters of a random 24-byte key are all hex digits with probability
// (22/64)^32 < 1e-14.
func FormatKey(k []byte) string {
	return base64.StdEncoding.EncodeToString(k)
}

package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
)

// NonceSize and TagSize are those of RFC 4106 and of cipher.NewGCM.
const (
	NonceSize = 12
	TagSize   = 16
)

// New returns an AES-GCM AEAD for key (16, 24 or 32 bytes: AES-128, AES-192
// or AES-256) with a 12-byte nonce and a 16-byte tag. Its Seal and Open
// behave as those of cipher.NewGCM(aes.NewCipher(key)): Seal appends to dst,
// in-place use (Seal(p[:0], …, p, …), Open(c[:0], …, c, …)) works, buffers
// that overlap other than exactly panic, and an Open that fails
// authentication returns an error and zeroes the plaintext it wrote.
//
// The AEAD is read-only after New and safe for concurrent use. Seal and Open
// do not allocate when dst has room.
func New(key []byte) (cipher.AEAD, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, aes.KeySizeError(len(key))
	}
	if a := newAccelerated(key); a != nil {
		return a, nil
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Accelerated reports whether New returns this package's assembly (true) or
// the standard library's AES-GCM (false) on this machine and build.
func Accelerated() bool { return useAsm }

// Implementation names the AES-GCM New returns on this machine and build,
// for the daemon's start line and `drover version`: a slow host is easier
// to explain when they say which one it got.
func Implementation() string {
	if useAsm {
		return "vaes+vpclmulqdq (drover's assembly)"
	}
	return "Go standard library"
}

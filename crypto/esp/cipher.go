package esp

import (
	"crypto/cipher"
	"fmt"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/drovernet/drover/crypto/aesgcm"
)

// Cipher is an ESP AEAD transform. All three use a 16-byte ICV and an 8-byte
// explicit IV, so packet geometry does not depend on the cipher.
type Cipher uint8

// The values are drover's own (not IANA transform IDs) and 0 is invalid.
const (
	AES128GCM        Cipher = iota + 1 // RFC 4106, xfrm rfc4106(gcm(aes)), 16-byte key
	AES256GCM                          // RFC 4106, xfrm rfc4106(gcm(aes)), 32-byte key
	ChaCha20Poly1305                   // RFC 7634, xfrm rfc7539esp(chacha20,poly1305)
)

// saltLen is the implicit nonce part kept with the key (RFC 4106 §4,
// RFC 7634 §2): the last 4 bytes of the key material, as xfrm and IKEv2
// KEYMAT lay it out.
const saltLen = 4

var cipherNames = [...]string{
	AES128GCM:        "aes-128-gcm",
	AES256GCM:        "aes-256-gcm",
	ChaCha20Poly1305: "chacha20-poly1305",
}

// ParseCipher returns the Cipher named s: "aes-128-gcm", "aes-256-gcm" or
// "chacha20-poly1305" (the names String returns).
func ParseCipher(s string) (Cipher, error) {
	for c, name := range cipherNames {
		if name != "" && name == s {
			return Cipher(c), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want aes-128-gcm, aes-256-gcm or chacha20-poly1305)", ErrCipher, s)
}

// String returns the cipher's configuration name.
func (c Cipher) String() string {
	if c.valid() {
		return cipherNames[c]
	}
	return "Cipher(" + strconv.Itoa(int(c)) + ")"
}

func (c Cipher) valid() bool { return c >= AES128GCM && c <= ChaCha20Poly1305 }

// KeyLen returns the length of the key material for c, including the 4-byte
// salt at its end (the layout `ip xfrm state … aead ALG 0xKEYMAT 128` takes):
// 20 for AES128GCM, 36 for AES256GCM and ChaCha20Poly1305, 0 for an invalid c.
func (c Cipher) KeyLen() int {
	switch c {
	case AES128GCM:
		return 16 + saltLen
	case AES256GCM, ChaCha20Poly1305:
		return 32 + saltLen
	}
	return 0
}

// newAEAD builds the AEAD and splits off the salt. It checks everything
// the kernel checks: a known cipher and key material of exactly KeyLen
// bytes (xfrm refuses material without the salt or of any other length).
func newAEAD(c Cipher, keymat []byte) (cipher.AEAD, [saltLen]byte, error) {
	var salt [saltLen]byte
	if !c.valid() {
		return nil, salt, fmt.Errorf("%w %d", ErrCipher, c)
	}
	if len(keymat) != c.KeyLen() {
		return nil, salt, fmt.Errorf("%w: %s needs %d bytes of key material (%d-byte key then %d-byte salt), got %d",
			ErrKey, c, c.KeyLen(), c.KeyLen()-saltLen, saltLen, len(keymat))
	}
	key := keymat[:len(keymat)-saltLen]
	copy(salt[:], keymat[len(key):])
	var (
		a   cipher.AEAD
		err error
	)
	if c == ChaCha20Poly1305 {
		a, err = chacha20poly1305.New(key)
	} else {
		// aesgcm: VAES/VPCLMULQDQ on amd64 CPUs that have them (twice
		// the standard library's speed at 1400 bytes), the standard
		// library's AES-GCM everywhere else; the same bytes either way.
		a, err = aesgcm.New(key)
	}
	if err != nil { // unreachable with the lengths checked above
		return nil, salt, fmt.Errorf("%w: %s: %w", ErrKey, c, err)
	}
	return a, salt, nil
}

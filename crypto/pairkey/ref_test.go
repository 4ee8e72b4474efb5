package pairkey_test

// An independent computation of the construction in docs/keys.md, used to
// cross-check the package: X25519 from golang.org/x/crypto/curve25519 (not
// crypto/ecdh) and HKDF written out from RFC 5869 §2.2–2.3 with crypto/hmac
// (not crypto/hkdf), each first checked against its RFC's vectors.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/curve25519"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

// refExtract is HKDF-Extract(salt, IKM) = HMAC-Hash(salt, IKM) (RFC 5869 §2.2).
func refExtract(salt, ikm []byte) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(ikm)
	return m.Sum(nil)
}

// refExpand is HKDF-Expand(PRK, info, L) (RFC 5869 §2.3):
// T(i) = HMAC-Hash(PRK, T(i-1) | info | i), output T(1) | T(2) | … cut to L.
func refExpand(prk, info []byte, n int) []byte {
	var t, out []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(sha256.New, prk)
		m.Write(t)
		m.Write(info)
		m.Write([]byte{i})
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

func refX25519(t testing.TB, priv, pub [32]byte) []byte {
	t.Helper()
	out, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		t.Fatalf("curve25519.X25519: %v", err)
	}
	return out
}

// refHost is one host's keys, private and public, as the reference sees them.
type refHost struct {
	idPriv, ephPriv [32]byte
	id, eph         [32]byte
	epoch           uint32
}

func refHostFrom(t testing.TB, l pairkey.Local) refHost {
	t.Helper()
	h := refHost{idPriv: l.Identity.Private, ephPriv: l.Ephemeral.Private, epoch: l.Epoch}
	pub := func(priv [32]byte) (p [32]byte) {
		b, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		copy(p[:], b)
		return p
	}
	h.id, h.eph = pub(h.idPriv), pub(h.ephPriv)
	return h
}

func refTuple(s, r refHost) []byte {
	var b []byte
	b = append(b, s.id[:]...)
	b = append(b, r.id[:]...)
	b = append(b, s.eph[:]...)
	b = append(b, r.eph[:]...)
	b = binary.BigEndian.AppendUint32(b, s.epoch)
	return binary.BigEndian.AppendUint32(b, r.epoch)
}

// refSA computes sender → receiver from the sender's private keys, following
// docs/keys.md step by step. The SPI is the first candidate.
func refSA(t testing.TB, c esp.Cipher, clusterKey []byte, s, r refHost) (key []byte, spis []uint32) {
	t.Helper()
	kc := refExtract([]byte("drover cluster v1"), clusterKey)
	var ikm []byte
	ikm = append(ikm, refX25519(t, s.ephPriv, r.eph)...) // ee
	ikm = append(ikm, refX25519(t, s.idPriv, r.id)...)   // ss
	ikm = append(ikm, refX25519(t, s.ephPriv, r.id)...)  // es
	ikm = append(ikm, refX25519(t, s.idPriv, r.eph)...)  // se
	prk := refExtract(kc, ikm)
	info := append([]byte("drover esp v1"), byte(c))
	info = append(info, refTuple(s, r)...)
	info = append(info, "key"...)
	key = refExpand(prk, info, c.KeyLen())

	b := refExpand(kc, append([]byte("drover spi v1"), refTuple(s, r)...), 32)
	for i := 0; i < 32; i += 4 {
		spis = append(spis, binary.BigEndian.Uint32(b[i:])|0x80000000)
	}
	return key, spis
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestReferenceHKDF checks refExtract/refExpand against RFC 5869 Appendix A.1
// (test case 1, SHA-256).
func TestReferenceHKDF(t *testing.T) {
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt := unhex(t, "000102030405060708090a0b0c")
	info := unhex(t, "f0f1f2f3f4f5f6f7f8f9")
	wantPRK := unhex(t, "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
	wantOKM := unhex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
	prk := refExtract(salt, ikm)
	if !bytes.Equal(prk, wantPRK) {
		t.Fatalf("PRK: got %x, want %x", prk, wantPRK)
	}
	if okm := refExpand(prk, info, 42); !bytes.Equal(okm, wantOKM) {
		t.Fatalf("OKM: got %x, want %x", okm, wantOKM)
	}
}

// RFC 7748 §6.1.
const (
	rfcAlicePriv = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	rfcAlicePub  = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	rfcBobPriv   = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
	rfcBobPub    = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
	rfcShared    = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
)

func TestReferenceX25519(t *testing.T) {
	var a, b [32]byte
	copy(a[:], unhex(t, rfcAlicePriv))
	copy(b[:], unhex(t, rfcBobPub))
	if got := refX25519(t, a, b); hex.EncodeToString(got) != rfcShared {
		t.Fatalf("X25519(alice, bob): got %x, want %s", got, rfcShared)
	}
}

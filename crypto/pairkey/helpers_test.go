package pairkey_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

var ciphers = []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305}

// testClusterKey is 00 01 … 1f.
var testClusterKey = func() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}()

func fromPriv(t testing.TB, priv []byte) pairkey.KeyPair {
	t.Helper()
	var p [32]byte
	copy(p[:], priv)
	kp, err := pairkey.KeyPairFromPrivate(p)
	if err != nil {
		t.Fatalf("KeyPairFromPrivate(%x): %v", priv, err)
	}
	return kp
}

// fixedHosts are the known-answer hosts: identities are RFC 7748's Alice and
// Bob, ephemerals SHA-256 of a label.
func fixedHosts(t testing.TB) (a, b pairkey.Local) {
	t.Helper()
	ea := sha256.Sum256([]byte("drover test A ephemeral"))
	eb := sha256.Sum256([]byte("drover test B ephemeral"))
	a = pairkey.Local{Identity: fromPriv(t, unhex(t, rfcAlicePriv)), Ephemeral: fromPriv(t, ea[:]), Epoch: 7}
	b = pairkey.Local{Identity: fromPriv(t, unhex(t, rfcBobPriv)), Ephemeral: fromPriv(t, eb[:]), Epoch: 3}
	return a, b
}

// newRand is a deterministic key source for a test.
func newRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func newHost(t testing.TB, r *rand.ChaCha8, epoch uint32) pairkey.Local {
	t.Helper()
	id, err := pairkey.NewKeyPair(r)
	if err != nil {
		t.Fatal(err)
	}
	eph, err := pairkey.NewKeyPair(r)
	if err != nil {
		t.Fatal(err)
	}
	return pairkey.Local{Identity: id, Ephemeral: eph, Epoch: epoch}
}

func mustPair(t testing.TB, c esp.Cipher, ck []byte, self pairkey.Local, peer pairkey.Party) (out, in pairkey.SA) {
	t.Helper()
	out, in, err := pairkey.Pair(c, ck, self, peer)
	if err != nil {
		t.Fatalf("Pair(%s): %v", c, err)
	}
	return out, in
}

func hx(b []byte) string { return hex.EncodeToString(b) }

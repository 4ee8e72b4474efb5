package pairkey

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Errors. Outbound, Inbound, Pair, SPICandidates and ReceiverSPIs wrap them
// with %w and say which input was at fault.
var (
	// ErrLowOrder: an X25519 result was all zero, so the peer's public key
	// is a low-order point (RFC 7748 §6.1) and contributes nothing secret.
	ErrLowOrder = errors.New("pairkey: X25519 result is all zero (low-order public key)")
	// ErrZeroKey: an all-zero private key, which is what an identity that
	// was never loaded looks like.
	ErrZeroKey = errors.New("pairkey: private key is all zero")
	// ErrMismatch: a KeyPair whose Public is not its Private's.
	ErrMismatch = errors.New("pairkey: public key does not match the private key")
	// ErrClusterKey: the cluster key is shorter than MinClusterKeyLen.
	ErrClusterKey = errors.New("pairkey: cluster key too short")
	// ErrSelf: the peer publishes our own identity key, as a host cloned
	// from the same disk image would; no pair key is derived with it.
	ErrSelf = errors.New("pairkey: peer has this host's identity key")
)

// KeyPair is an X25519 key pair (RFC 7748). Private is the 32-byte scalar
// as generated (X25519 clamps it on use); Public is its u-coordinate.
type KeyPair struct {
	Private, Public [32]byte
	// prepared is Private as crypto/ecdh holds it, kept by NewKeyPair and
	// KeyPairFromPrivate, which make it to compute Public anyway:
	// crypto/ecdh computes the public key (a scalar multiplication) every
	// time it makes a private key, and pair needs both of this host's
	// keys for every peer, a third of its cost. nil in a KeyPair built
	// field by field (ecdhKey makes one then) and after Erase. Like every
	// crypto/ecdh key it holds its own copy of the scalar, which Erase
	// cannot clear; it is dropped, as the keys made per call were before.
	prepared *ecdh.PrivateKey
}

// NewKeyPair reads 32 bytes from rand (crypto/rand.Reader when nil) and
// returns the key pair with that private key. The reader is honoured, unlike
// ecdh.Curve.GenerateKey since Go 1.26, so that tests can be reproducible.
func NewKeyPair(rand io.Reader) (KeyPair, error) {
	if rand == nil {
		rand = cryptoRand
	}
	var priv [32]byte
	if _, err := io.ReadFull(rand, priv[:]); err != nil {
		return KeyPair{}, fmt.Errorf("pairkey: read private key: %w", err)
	}
	kp, err := KeyPairFromPrivate(priv)
	clear(priv[:])
	return kp, err
}

var cryptoRand = rand.Reader

// KeyPairFromPrivate returns the key pair of priv (for an identity key read
// back from disk). An all-zero priv is refused with ErrZeroKey.
func KeyPairFromPrivate(priv [32]byte) (KeyPair, error) {
	if priv == ([32]byte{}) {
		return KeyPair{}, ErrZeroKey
	}
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil { // unreachable: X25519 only checks the length
		return KeyPair{}, fmt.Errorf("pairkey: %w", err)
	}
	kp := KeyPair{Private: priv, prepared: k}
	copy(kp.Public[:], k.PublicKey().Bytes())
	return kp, nil
}

// Erase zeroes the private key. The daemon calls it on an ephemeral key
// once the grace period after its replacement is over: forward secrecy
// starts there (docs/keys.md). Copies the caller made are not reached.
func (k *KeyPair) Erase() {
	clear(k.Private[:])
	k.prepared = nil
}

// Party is what a host publishes about its keys: the identity and current
// ephemeral public keys and the ephemeral's epoch (a counter the daemon
// increments at each rotation; it labels the key, uniqueness does not rest
// on it).
type Party struct {
	Identity, Ephemeral [32]byte
	Epoch               uint32
}

// Local is this host's side: both private keys and the ephemeral's epoch.
type Local struct {
	Identity, Ephemeral KeyPair
	Epoch               uint32
}

// Party returns what l publishes.
func (l Local) Party() Party {
	return Party{Identity: l.Identity.Public, Ephemeral: l.Ephemeral.Public, Epoch: l.Epoch}
}

// ecdhKey returns kp's private key as a crypto/ecdh key (kp.prepared when
// it still holds kp.Private), after checking that kp.Public belongs to it:
// the public key goes into the info, and a stale one would make the two
// ends disagree without any error. The check is free, as crypto/ecdh
// computes the public key eagerly (that scalar multiplication is why pair
// makes each of its two keys once, and why KeyPair keeps one).
func ecdhKey(kp *KeyPair, what string) (*ecdh.PrivateKey, error) {
	if k := kp.prepared; k != nil {
		// Still the key it was made from: the fields are exported, and a
		// changed Private must not derive with the old scalar.
		priv := k.Bytes() // a copy
		same := bytes.Equal(priv, kp.Private[:])
		clear(priv)
		if same {
			if !bytes.Equal(k.PublicKey().Bytes(), kp.Public[:]) {
				return nil, fmt.Errorf("%w: %s", ErrMismatch, what)
			}
			return k, nil
		}
	}
	k, err := ecdh.X25519().NewPrivateKey(kp.Private[:])
	if err != nil { // unreachable: X25519 only checks the length
		return nil, fmt.Errorf("pairkey: %s: %w", what, err)
	}
	if !bytes.Equal(k.PublicKey().Bytes(), kp.Public[:]) {
		return nil, fmt.Errorf("%w: %s", ErrMismatch, what)
	}
	return k, nil
}

// x25519 writes X25519(priv, pub) into dst. It fails with ErrLowOrder when
// the result is all zero (RFC 7748 §6.1: "check that the result is not the
// all-zero value"); crypto/ecdh performs that check, and it is the only way
// X25519 ECDH can fail with 32-byte inputs.
func x25519(dst *[32]byte, priv *ecdh.PrivateKey, pub *[32]byte, what string) error {
	p, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil { // unreachable: X25519 only checks the length
		return fmt.Errorf("pairkey: %s: %w", what, err)
	}
	s, err := priv.ECDH(p)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrLowOrder, what)
	}
	copy(dst[:], s)
	clear(s)
	return nil
}

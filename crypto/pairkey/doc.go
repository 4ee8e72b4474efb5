// Package pairkey derives the pairwise ESP keys and SPIs of a drover cluster
// from each host's X25519 keys and the cluster key (docs/keys.md has the
// construction, what each input protects against, and the rotation schedule).
//
// Every host has a long-term identity key pair and an ephemeral key pair it
// replaces at each rotation; it publishes both public keys and the
// ephemeral's epoch (a Party). For one direction, sender → receiver, both
// ends compute the same SA from four X25519 results — ephemeral–ephemeral,
// identity–identity, and the two mixed ones — extracted with HKDF-SHA-256
// under a salt derived from the cluster key and expanded with every public
// input (cipher, identities, ephemerals, epochs, direction) in the info:
//
//	ee = X25519(S.eph, R.eph)   ss = X25519(S.id, R.id)
//	es = X25519(S.eph, R.id)    se = X25519(S.id, R.eph)
//	Kc     = HKDF-Extract(salt "drover cluster v1", cluster key)
//	PRK    = HKDF-Extract(salt Kc, ee ‖ ss ‖ es ‖ se)
//	keymat = HKDF-Expand(PRK, "drover esp v1" ‖ cipher ‖ tuple ‖ "key", Cipher.KeyLen())
//	SPIs   = HKDF-Expand(Kc,  "drover spi v1" ‖ tuple, 32) → 8 candidates, top bit set
//	tuple  = S.id ‖ R.id ‖ S.eph ‖ R.eph ‖ S.epoch ‖ R.epoch   (epochs big-endian uint32)
//
// SPI candidates use only public values and the cluster key, so every member
// can compute every pair's candidates; AssignSPIs (ReceiverSPIs does both
// steps) then gives each sender of one receiver a distinct SPI by a rule both
// ends of every pair evaluate alike when they see the same membership.
//
// The package owns the arithmetic only. It does no I/O and reads no clock:
// storing the identity key, timing rotations, publishing public keys and
// installing SAs (crypto/esp) belong to the daemon. Go cannot promise that
// secrets are erased from memory; KeyPair.Erase and the zeroing of
// intermediate values here are best effort.
package pairkey

package pairkey

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/drovernet/drover/crypto/esp"
)

const (
	// MinClusterKeyLen is the shortest cluster key accepted (memberlist's
	// keyring takes 16, 24 or 32 bytes).
	MinClusterKeyLen = 16
	// NumSPICandidates is how many SPI candidates each pair has, in order.
	NumSPICandidates = 8
	// DerivedSPIMin is the lowest derived SPI: every candidate has the top
	// bit set, so SPIs below it (from 0x100, RFC 4303 §2.1) are left to
	// manual SAs from the static configuration and never collide with
	// derived ones.
	DerivedSPIMin uint32 = 0x80000000
)

// Labels. Changing any of them changes every key: they are part of the
// protocol, like the field order below.
const (
	labelCluster = "drover cluster v1"
	labelESP     = "drover esp v1"
	labelSPI     = "drover spi v1"
	labelKey     = "key"
)

// tupleLen is the length of S.id ‖ R.id ‖ S.eph ‖ R.eph ‖ S.epoch ‖ R.epoch.
const tupleLen = 4*32 + 2*4

// SA is the key material of one direction, sender → receiver, as both ends
// compute it.
type SA struct {
	// SPI is the pair's first SPI candidate. It is the SPI to use unless
	// AssignSPIs, run over all senders to the same receiver, picks a later
	// candidate because of a collision; the daemon sets SPI from it.
	SPI uint32
	// Key is Cipher.KeyLen bytes: the AEAD key then the 4-byte salt, the
	// layout esp.NewOutSA and esp.NewInSA take. The caller may clear it once
	// the esp SA is built.
	Key []byte
	// SenderEpoch and ReceiverEpoch are the epochs of the two ephemeral
	// keys the SA was derived from.
	SenderEpoch, ReceiverEpoch uint32
}

// Outbound returns the SA for self → peer: what self seals with.
func Outbound(c esp.Cipher, clusterKey []byte, self Local, peer Party) (SA, error) {
	out, _, err := pair(c, clusterKey, self, peer, true, false)
	return out, err
}

// Inbound returns the SA for peer → self: what self opens with. It equals
// the peer's Outbound towards self.
func Inbound(c esp.Cipher, clusterKey []byte, self Local, peer Party) (SA, error) {
	_, in, err := pair(c, clusterKey, self, peer, false, true)
	return in, err
}

// Pair returns both directions, Outbound and Inbound, for the cost of one:
// the four X25519 results are shared between them.
func Pair(c esp.Cipher, clusterKey []byte, self Local, peer Party) (out, in SA, err error) {
	return pair(c, clusterKey, self, peer, true, true)
}

func pair(c esp.Cipher, clusterKey []byte, self Local, peer Party, wantOut, wantIn bool) (out, in SA, err error) {
	if c.KeyLen() == 0 {
		return SA{}, SA{}, fmt.Errorf("pairkey: %w %d", esp.ErrCipher, c)
	}
	if self.Identity.Private == ([32]byte{}) {
		return SA{}, SA{}, fmt.Errorf("%w: own identity", ErrZeroKey)
	}
	if self.Ephemeral.Private == ([32]byte{}) {
		return SA{}, SA{}, fmt.Errorf("%w: own ephemeral (epoch %d; erased?)", ErrZeroKey, self.Epoch)
	}
	if peer.Identity == self.Identity.Public {
		return SA{}, SA{}, ErrSelf
	}
	kc, err := clusterPRK(clusterKey)
	if err != nil {
		return SA{}, SA{}, err
	}
	defer clear(kc)

	idKey, err := ecdhKey(&self.Identity, "own identity key")
	if err != nil {
		return SA{}, SA{}, err
	}
	ephKey, err := ecdhKey(&self.Ephemeral, "own ephemeral key")
	if err != nil {
		return SA{}, SA{}, err
	}
	// ee and ss are symmetric; x and y are the mixed terms seen from here.
	// For self → peer, es = X25519(self.eph, peer.id) = x and
	// se = X25519(self.id, peer.eph) = y; for peer → self the peer's es is
	// X25519(peer.eph, self.id) = y and its se is X25519(peer.id, self.eph) = x.
	var ee, ss, x, y [32]byte
	defer func() { clear(ee[:]); clear(ss[:]); clear(x[:]); clear(y[:]) }()
	for _, dh := range []struct {
		dst  *[32]byte
		priv *ecdh.PrivateKey
		pub  *[32]byte
		what string
	}{
		{&ee, ephKey, &peer.Ephemeral, "peer ephemeral key"},
		{&ss, idKey, &peer.Identity, "peer identity key"},
		{&x, ephKey, &peer.Identity, "peer identity key"},
		{&y, idKey, &peer.Ephemeral, "peer ephemeral key"},
	} {
		if err := x25519(dh.dst, dh.priv, dh.pub, dh.what); err != nil {
			return SA{}, SA{}, err
		}
	}

	me := self.Party()
	if wantOut {
		if out, err = derive(c, kc, me, peer, &ee, &ss, &x, &y); err != nil {
			return SA{}, SA{}, err
		}
	}
	if wantIn {
		if in, err = derive(c, kc, peer, me, &ee, &ss, &y, &x); err != nil {
			return SA{}, SA{}, err
		}
	}
	return out, in, nil
}

// derive computes the SA for sender → receiver from the four X25519 results
// of that direction: IKM = ee ‖ ss ‖ es ‖ se. The mixed terms in that order
// already differ between the two directions; the info, sender first, makes
// the direction explicit as well.
func derive(c esp.Cipher, kc []byte, sender, receiver Party, ee, ss, es, se *[32]byte) (SA, error) {
	var ikm [4 * 32]byte
	defer clear(ikm[:])
	copy(ikm[0:], ee[:])
	copy(ikm[32:], ss[:])
	copy(ikm[64:], es[:])
	copy(ikm[96:], se[:])
	prk, err := hkdf.Extract(sha256.New, ikm[:], kc)
	if err != nil {
		return SA{}, fmt.Errorf("pairkey: HKDF-Extract: %w", err)
	}
	defer clear(prk)

	info := make([]byte, 0, len(labelESP)+1+tupleLen+len(labelKey))
	info = append(info, labelESP...)
	info = append(info, byte(c))
	info = appendTuple(info, sender, receiver)
	info = append(info, labelKey...)
	key, err := hkdf.Expand(sha256.New, prk, string(info), c.KeyLen())
	if err != nil {
		return SA{}, fmt.Errorf("pairkey: HKDF-Expand: %w", err)
	}
	spis := candidates(kc, sender, receiver)
	return SA{SPI: spis[0], Key: key, SenderEpoch: sender.Epoch, ReceiverEpoch: receiver.Epoch}, nil
}

// SPICandidates returns the NumSPICandidates SPI candidates of sender →
// receiver, in order of preference, each in [DerivedSPIMin, 0xffffffff]. They
// depend only on public keys, epochs and the cluster key, so any member can
// compute them for any pair: that is what lets both ends of a pair run
// AssignSPIs over all senders to the receiver and agree.
func SPICandidates(clusterKey []byte, sender, receiver Party) ([]uint32, error) {
	kc, err := clusterPRK(clusterKey)
	if err != nil {
		return nil, err
	}
	defer clear(kc)
	c := candidates(kc, sender, receiver)
	return c[:], nil
}

func candidates(kc []byte, sender, receiver Party) [NumSPICandidates]uint32 {
	info := make([]byte, 0, len(labelSPI)+tupleLen)
	info = append(info, labelSPI...)
	info = appendTuple(info, sender, receiver)
	b, err := hkdf.Expand(sha256.New, kc, string(info), 4*NumSPICandidates)
	if err != nil { // unreachable: 32 bytes from a 32-byte PRK
		panic("pairkey: HKDF-Expand: " + err.Error())
	}
	var c [NumSPICandidates]uint32
	for i := range c {
		c[i] = binary.BigEndian.Uint32(b[4*i:]) | DerivedSPIMin
	}
	return c
}

// clusterPRK is Kc = HKDF-Extract(salt "drover cluster v1", clusterKey). The
// label keeps this use of the key apart from memberlist's, which encrypts
// gossip with the raw key.
func clusterPRK(clusterKey []byte) ([]byte, error) {
	if len(clusterKey) < MinClusterKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrClusterKey, len(clusterKey), MinClusterKeyLen)
	}
	kc, err := hkdf.Extract(sha256.New, clusterKey, []byte(labelCluster))
	if err != nil {
		return nil, fmt.Errorf("pairkey: HKDF-Extract: %w", err)
	}
	return kc, nil
}

// appendTuple appends S.id ‖ R.id ‖ S.eph ‖ R.eph ‖ S.epoch ‖ R.epoch: fixed
// lengths, so the encoding is unambiguous.
func appendTuple(b []byte, sender, receiver Party) []byte {
	b = append(b, sender.Identity[:]...)
	b = append(b, receiver.Identity[:]...)
	b = append(b, sender.Ephemeral[:]...)
	b = append(b, receiver.Ephemeral[:]...)
	b = binary.BigEndian.AppendUint32(b, sender.Epoch)
	return binary.BigEndian.AppendUint32(b, receiver.Epoch)
}

package pairkey_test

import (
	"bytes"
	"errors"
	"testing"
	"testing/iotest"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

func TestBothEndsAgree(t *testing.T) {
	r := newRand(1)
	a, b := newHost(t, r, 1), newHost(t, r, 1)
	for _, c := range ciphers {
		outA, err := pairkey.Outbound(c, testClusterKey, a, b.Party())
		if err != nil {
			t.Fatal(err)
		}
		inB, err := pairkey.Inbound(c, testClusterKey, b, a.Party())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(outA.Key, inB.Key) || outA.SPI != inB.SPI {
			t.Errorf("%s: Outbound at A %#x %x, Inbound at B %#x %x", c, outA.SPI, outA.Key, inB.SPI, inB.Key)
		}
		// Pair gives the same as Outbound and Inbound.
		po, pi := mustPair(t, c, testClusterKey, a, b.Party())
		inA, err := pairkey.Inbound(c, testClusterKey, a, b.Party())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(po.Key, outA.Key) || !bytes.Equal(pi.Key, inA.Key) || po.SPI != outA.SPI || pi.SPI != inA.SPI {
			t.Errorf("%s: Pair (%x, %x) differs from Outbound/Inbound (%x, %x)", c, po.Key, pi.Key, outA.Key, inA.Key)
		}
		if len(outA.Key) != c.KeyLen() {
			t.Errorf("%s: key length got %d, want %d", c, len(outA.Key), c.KeyLen())
		}
	}
}

// TestDirections: A→B and B→A share ee and ss but not keys or SPIs, so a
// packet reflected back to its sender does not open (no reflection).
func TestDirections(t *testing.T) {
	r := newRand(2)
	a, b := newHost(t, r, 5), newHost(t, r, 5) // same epochs: only the order differs
	for _, c := range ciphers {
		ab, ba := mustPair(t, c, testClusterKey, a, b.Party())
		if bytes.Equal(ab.Key, ba.Key) || ab.SPI == ba.SPI {
			t.Errorf("%s: A→B %#x %x equals B→A %#x %x", c, ab.SPI, ab.Key, ba.SPI, ba.Key)
		}
	}
}

// TestInputsChangeKeys: each input of the construction changes both the key
// and the SPI candidates when it changes alone (the SPIs do not depend on
// the cipher).
func TestInputsChangeKeys(t *testing.T) {
	r := newRand(3)
	a, b, c3 := newHost(t, r, 1), newHost(t, r, 1), newHost(t, r, 1)
	const cph = esp.AES256GCM
	base, _ := mustPair(t, cph, testClusterKey, a, b.Party())

	otherCluster := bytes.Clone(testClusterKey)
	otherCluster[31] ^= 1
	bNextEpoch := b // same key, next epoch number
	bNextEpoch.Epoch++
	aNextEpoch := a
	aNextEpoch.Epoch++
	bRestarted := b // new ephemeral key, same epoch (a restart that lost its counter)
	bRestarted.Ephemeral = newHost(t, r, 0).Ephemeral
	aRestarted := a
	aRestarted.Ephemeral = newHost(t, r, 0).Ephemeral

	cases := []struct {
		name string
		ck   []byte
		self pairkey.Local
		peer pairkey.Party
	}{
		{"cluster key", otherCluster, a, b.Party()},
		{"receiver epoch", testClusterKey, a, bNextEpoch.Party()},
		{"sender epoch", testClusterKey, aNextEpoch, b.Party()},
		{"receiver ephemeral", testClusterKey, a, bRestarted.Party()},
		{"sender ephemeral", testClusterKey, aRestarted, b.Party()},
		{"third party as receiver", testClusterKey, a, c3.Party()},
		{"third party as sender", testClusterKey, c3, b.Party()},
	}
	seen := map[string]string{hx(base.Key): "base"}
	for _, tc := range cases {
		got, _ := mustPair(t, cph, testClusterKey, tc.self, tc.peer)
		if tc.ck != nil {
			got, _ = mustPair(t, cph, tc.ck, tc.self, tc.peer)
		}
		if prev, dup := seen[hx(got.Key)]; dup {
			t.Errorf("%s: key %x equals that of %s", tc.name, got.Key, prev)
		}
		seen[hx(got.Key)] = tc.name
		if got.SPI == base.SPI {
			t.Errorf("%s: SPI %#x unchanged", tc.name, got.SPI)
		}
	}

	// The cipher is in the info: the AES-128 key is not a prefix of the
	// AES-256 one, as it would be from the same HKDF-Expand.
	k128, _ := mustPair(t, esp.AES128GCM, testClusterKey, a, b.Party())
	kcc, _ := mustPair(t, esp.ChaCha20Poly1305, testClusterKey, a, b.Party())
	if bytes.Equal(k128.Key, base.Key[:len(k128.Key)]) || bytes.Equal(kcc.Key, base.Key) {
		t.Errorf("keys of different ciphers are related: %x, %x, %x", k128.Key, base.Key, kcc.Key)
	}
	if k128.SPI != base.SPI {
		t.Errorf("SPI depends on the cipher: %#x vs %#x", k128.SPI, base.SPI)
	}
}

// Low-order u-coordinates: 0, 1 and a point of order 8 (RFC 7748 §6.1 and
// the curve's small subgroup); a clamped scalar maps each to zero.
var lowOrder = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
}

func TestLowOrderRejected(t *testing.T) {
	r := newRand(4)
	a, b := newHost(t, r, 1), newHost(t, r, 1)
	for _, lo := range lowOrder {
		var p [32]byte
		copy(p[:], unhex(t, lo))
		for _, which := range []string{"identity", "ephemeral"} {
			peer := b.Party()
			if which == "identity" {
				peer.Identity = p
			} else {
				peer.Ephemeral = p
			}
			for name, f := range map[string]func(esp.Cipher, []byte, pairkey.Local, pairkey.Party) (pairkey.SA, error){
				"Outbound": pairkey.Outbound, "Inbound": pairkey.Inbound,
			} {
				sa, err := f(esp.AES128GCM, testClusterKey, a, peer)
				if !errors.Is(err, pairkey.ErrLowOrder) || sa.Key != nil {
					t.Errorf("%s with %s %s…: got %x, %v; want ErrLowOrder", name, which, lo[:8], sa.Key, err)
				}
			}
		}
	}
}

func TestErrors(t *testing.T) {
	r := newRand(5)
	a, b := newHost(t, r, 1), newHost(t, r, 1)
	erased := a
	erased.Ephemeral.Erase()
	noID := a
	noID.Identity = pairkey.KeyPair{}
	staleEph := a
	staleEph.Ephemeral.Public = b.Ephemeral.Public
	staleID := a
	staleID.Identity.Public[0] ^= 1
	// The prepared crypto/ecdh key of a KeyPair is not used once Private
	// was changed under it.
	changedPriv := a
	changedPriv.Ephemeral.Private[1] ^= 1 // not byte 0: X25519 clamps its low bits
	cases := []struct {
		name string
		c    esp.Cipher
		ck   []byte
		self pairkey.Local
		peer pairkey.Party
		want error
	}{
		{"short cluster key", esp.AES128GCM, testClusterKey[:15], a, b.Party(), pairkey.ErrClusterKey},
		{"no cluster key", esp.AES128GCM, nil, a, b.Party(), pairkey.ErrClusterKey},
		{"unknown cipher", esp.Cipher(0), testClusterKey, a, b.Party(), esp.ErrCipher},
		{"unknown cipher 9", esp.Cipher(9), testClusterKey, a, b.Party(), esp.ErrCipher},
		{"peer with our identity", esp.AES128GCM, testClusterKey, a, a.Party(), pairkey.ErrSelf},
		{"erased ephemeral", esp.AES128GCM, testClusterKey, erased, b.Party(), pairkey.ErrZeroKey},
		{"no identity", esp.AES128GCM, testClusterKey, noID, b.Party(), pairkey.ErrZeroKey},
		{"ephemeral public not ours", esp.AES128GCM, testClusterKey, staleEph, b.Party(), pairkey.ErrMismatch},
		{"identity public not ours", esp.AES128GCM, testClusterKey, staleID, b.Party(), pairkey.ErrMismatch},
		{"ephemeral private changed", esp.AES128GCM, testClusterKey, changedPriv, b.Party(), pairkey.ErrMismatch},
	}
	for _, tc := range cases {
		if _, _, err := pairkey.Pair(tc.c, tc.ck, tc.self, tc.peer); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := pairkey.SPICandidates(testClusterKey[:8], a.Party(), b.Party()); !errors.Is(err, pairkey.ErrClusterKey) {
		t.Errorf("SPICandidates with 8-byte cluster key: got %v, want ErrClusterKey", err)
	}
	if _, err := pairkey.KeyPairFromPrivate([32]byte{}); !errors.Is(err, pairkey.ErrZeroKey) {
		t.Errorf("KeyPairFromPrivate(zero): got %v, want ErrZeroKey", err)
	}
	if _, err := pairkey.NewKeyPair(iotest.ErrReader(errors.New("boom"))); err == nil {
		t.Error("NewKeyPair with a failing reader: got nil error")
	}
	if _, err := pairkey.NewKeyPair(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Error("NewKeyPair with 31 bytes of randomness: got nil error")
	}
	if kp, err := pairkey.NewKeyPair(nil); err != nil || kp.Public == ([32]byte{}) {
		t.Errorf("NewKeyPair(nil): got %x, %v", kp.Public, err)
	}
}

func TestNewKeyPairUsesReader(t *testing.T) {
	priv := bytes.Repeat([]byte{0x42}, 32)
	kp, err := pairkey.NewKeyPair(bytes.NewReader(priv))
	if err != nil {
		t.Fatal(err)
	}
	want := fromPriv(t, priv)
	if kp.Private != want.Private || kp.Public != want.Public {
		t.Errorf("got %x/%x, want %x/%x", kp.Private, kp.Public, want.Private, want.Public)
	}
	kp.Erase()
	if kp.Private != ([32]byte{}) || kp.Public != want.Public {
		t.Errorf("after Erase: private %x, public %x", kp.Private, kp.Public)
	}
}

// TestWithESP: the derived material works as esp SAs for every cipher: A
// seals with Outbound, B opens with Inbound (and a reflected packet does not
// open at A).
func TestWithESP(t *testing.T) {
	r := newRand(6)
	a, b := newHost(t, r, 1), newHost(t, r, 2)
	inner := make([]byte, 60)
	inner[0] = 0x45
	copy(inner[20:], "drover pairkey test payload")
	for _, c := range ciphers {
		outA, inA := mustPair(t, c, testClusterKey, a, b.Party())
		_, inB := mustPair(t, c, testClusterKey, b, a.Party())
		so, err := esp.NewOutSA(c, outA.SPI, outA.Key, false)
		if err != nil {
			t.Fatalf("%s: NewOutSA: %v", c, err)
		}
		si, err := esp.NewInSA(c, inB.SPI, inB.Key, false, esp.DefaultWindow)
		if err != nil {
			t.Fatalf("%s: NewInSA: %v", c, err)
		}
		// A's own inbound SA, forced onto the outbound SPI: only the key
		// differs, so this shows a reflected packet fails authentication.
		refl, err := esp.NewInSA(c, outA.SPI, inA.Key, false, esp.DefaultWindow)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
		copy(buf[esp.Headroom:], inner)
		pkt, err := so.Seal(buf, esp.Headroom, len(inner))
		if err != nil {
			t.Fatalf("%s: Seal: %v", c, err)
		}
		reflected := bytes.Clone(pkt)
		got, nh, err := si.Open(pkt)
		if err != nil || nh != esp.NextHeaderIPv4 || !bytes.Equal(got, inner) {
			t.Errorf("%s: Open: got %x, %d, %v; want %x, 4, nil", c, got, nh, err, inner)
		}
		if _, _, err := refl.Open(reflected); !errors.Is(err, esp.ErrAuth) {
			t.Errorf("%s: reflected packet: got %v, want ErrAuth", c, err)
		}
	}
}

// TestPropertyRandomHosts: for random hosts and epochs, both ends agree in
// both directions, directions differ, every SPI candidate has the top bit
// set, and no key repeats across pairs and directions.
func TestPropertyRandomHosts(t *testing.T) {
	r := newRand(7)
	n := 8
	if testing.Short() {
		n = 3
	}
	hosts := make([]pairkey.Local, 5)
	keys := map[string]string{}
	for i := range n {
		for j := range hosts {
			hosts[j] = newHost(t, r, uint32(r.Uint64()))
		}
		for x := range hosts {
			for y := range hosts {
				if x == y {
					continue
				}
				c := ciphers[(i+x+y)%len(ciphers)]
				out, in := mustPair(t, c, testClusterKey, hosts[x], hosts[y].Party())
				peerOut, peerIn := mustPair(t, c, testClusterKey, hosts[y], hosts[x].Party())
				if !bytes.Equal(out.Key, peerIn.Key) || out.SPI != peerIn.SPI || !bytes.Equal(in.Key, peerOut.Key) || in.SPI != peerOut.SPI {
					t.Fatalf("round %d, %d↔%d (%s): ends disagree", i, x, y, c)
				}
				if bytes.Equal(out.Key, in.Key) {
					t.Fatalf("round %d, %d↔%d: both directions have key %x", i, x, y, out.Key)
				}
				if prev, dup := keys[hx(out.Key)]; dup {
					t.Fatalf("round %d, %d→%d: key %x already seen for %s", i, x, y, out.Key, prev)
				}
				keys[hx(out.Key)] = "earlier pair"
				spis, err := pairkey.SPICandidates(testClusterKey, hosts[x].Party(), hosts[y].Party())
				if err != nil || len(spis) != pairkey.NumSPICandidates || spis[0] != out.SPI {
					t.Fatalf("SPICandidates: got %#x, %v; want %d starting %#x", spis, err, pairkey.NumSPICandidates, out.SPI)
				}
				for _, s := range spis {
					if s < pairkey.DerivedSPIMin {
						t.Fatalf("SPI candidate %#x below %#x", s, pairkey.DerivedSPIMin)
					}
				}
			}
		}
	}
}

// TestPreparedKeyFollowsFields: a KeyPair whose fields were replaced by
// another key's derives as that key does, not with the crypto/ecdh key it
// was made with.
func TestPreparedKeyFollowsFields(t *testing.T) {
	r := newRand(6)
	a, b, c := newHost(t, r, 1), newHost(t, r, 1), newHost(t, r, 1)
	swapped := a
	swapped.Ephemeral.Private, swapped.Ephemeral.Public = c.Ephemeral.Private, c.Ephemeral.Public
	want := a
	want.Ephemeral = c.Ephemeral
	gotOut, gotIn := mustPair(t, esp.AES128GCM, testClusterKey, swapped, b.Party())
	wantOut, wantIn := mustPair(t, esp.AES128GCM, testClusterKey, want, b.Party())
	if !bytes.Equal(gotOut.Key, wantOut.Key) || !bytes.Equal(gotIn.Key, wantIn.Key) {
		t.Errorf("keys with swapped fields: got %x/%x, want %x/%x", gotOut.Key, gotIn.Key, wantOut.Key, wantIn.Key)
	}
}

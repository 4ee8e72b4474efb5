package pairkey_test

import (
	"encoding/hex"
	"slices"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

// Known answers for fixedHosts (A: RFC 7748 Alice, epoch 7; B: Bob, epoch 3)
// and testClusterKey, computed once by this package and cross-checked below
// against the independent reference in ref_test.go. A change here changes
// the protocol: hosts of different versions would no longer agree.
var vectors = []struct {
	c     esp.Cipher
	keyAB string // A → B
	keyBA string // B → A
}{
	{esp.AES128GCM,
		"1699ea5b5a9c409b48165d6e0712b8e4b92e2292",
		"e7ed112c4fc1d9a369a8adc709343db71522e04f"},
	{esp.AES256GCM,
		"2deb64cc82464996444a2607da191ff0785c02b1ae08fa9ab21c895025a65607315bc030",
		"81fe2d72a168d95523167eb45454daeea6bda19d4b2d3e675400d1dc10bb22d3ae0343ad"},
	{esp.ChaCha20Poly1305,
		"a8b6c7f67111ae6207aa8b5cba33f9673d6e4b7884c96910d7f4777815052ec6cef8fd85",
		"06d5e5dfd517efefa756751ae544cda2fdb01fcc16484863fa58c8819b2729e7c3b3e3fd"},
}

var (
	spisAB = []uint32{0xfd74b8c7, 0xd34124e1, 0xdfe9148a, 0xbc658213, 0x87a85402, 0x8b769eb0, 0xdb3c21f9, 0xbdad543c}
	spisBA = []uint32{0x9580f975, 0xdbdbaa26, 0xe17e842f, 0xc845ff20, 0xc6a1070f, 0xded5daeb, 0xc6b34c28, 0x8082c4d9}
)

func TestKeyPairFromPrivateRFC7748(t *testing.T) {
	for _, v := range []struct{ priv, pub string }{{rfcAlicePriv, rfcAlicePub}, {rfcBobPriv, rfcBobPub}} {
		kp := fromPriv(t, unhex(t, v.priv))
		if got := hex.EncodeToString(kp.Public[:]); got != v.pub {
			t.Errorf("public key of %s: got %s, want %s", v.priv, got, v.pub)
		}
	}
}

func TestVectors(t *testing.T) {
	a, b := fixedHosts(t)
	ra, rb := refHostFrom(t, a), refHostFrom(t, b)
	for _, v := range vectors {
		t.Run(v.c.String(), func(t *testing.T) {
			outA, inA := mustPair(t, v.c, testClusterKey, a, b.Party())
			outB, inB := mustPair(t, v.c, testClusterKey, b, a.Party())
			if got := hx(outA.Key); got != v.keyAB {
				t.Errorf("A→B key: got %s, want %s", got, v.keyAB)
			}
			if got := hx(outB.Key); got != v.keyBA {
				t.Errorf("B→A key: got %s, want %s", got, v.keyBA)
			}
			if hx(inB.Key) != hx(outA.Key) || hx(inA.Key) != hx(outB.Key) {
				t.Errorf("ends disagree: A out %x, B in %x; B out %x, A in %x", outA.Key, inB.Key, outB.Key, inA.Key)
			}
			refAB, refSpisAB := refSA(t, v.c, testClusterKey, ra, rb)
			refBA, refSpisBA := refSA(t, v.c, testClusterKey, rb, ra)
			if hx(refAB) != v.keyAB || hx(refBA) != v.keyBA {
				t.Errorf("reference: A→B %x, B→A %x; want %s, %s", refAB, refBA, v.keyAB, v.keyBA)
			}
			if !slices.Equal(refSpisAB, spisAB) || !slices.Equal(refSpisBA, spisBA) {
				t.Errorf("reference SPIs: A→B %#x, B→A %#x; want %#x, %#x", refSpisAB, refSpisBA, spisAB, spisBA)
			}
			if outA.SPI != spisAB[0] || inB.SPI != spisAB[0] || outB.SPI != spisBA[0] || inA.SPI != spisBA[0] {
				t.Errorf("SPIs: A out %#x, B in %#x (want %#x); B out %#x, A in %#x (want %#x)",
					outA.SPI, inB.SPI, spisAB[0], outB.SPI, inA.SPI, spisBA[0])
			}
			if outA.SenderEpoch != 7 || outA.ReceiverEpoch != 3 || inA.SenderEpoch != 3 || inA.ReceiverEpoch != 7 {
				t.Errorf("epochs: out %d→%d, in %d→%d; want 7→3, 3→7", outA.SenderEpoch, outA.ReceiverEpoch, inA.SenderEpoch, inA.ReceiverEpoch)
			}
		})
	}
	for _, d := range []struct {
		name string
		s, r pairkey.Party
		want []uint32
	}{{"A→B", a.Party(), b.Party(), spisAB}, {"B→A", b.Party(), a.Party(), spisBA}} {
		got, err := pairkey.SPICandidates(testClusterKey, d.s, d.r)
		if err != nil || !slices.Equal(got, d.want) {
			t.Errorf("SPICandidates %s: got %#x, %v; want %#x", d.name, got, err, d.want)
		}
	}
}

package esp_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
)

// vector is one kernel-captured ESP packet from shared/interop (copied to
// testdata/). The plaintext was derived from the LAN-side capture, not by
// decryption, so the vectors are not circular.
type vector struct {
	Name         string  `json:"name"`
	AEAD         string  `json:"aead"`
	KeyMaterial  hexed   `json:"key_material"`
	ESN          bool    `json:"esn"`
	SPI          string  `json:"spi"`
	Seq          uint32  `json:"seq"`
	SeqHi        *uint32 `json:"seq_hi"`
	IV           hexed   `json:"iv"`
	Nonce        hexed   `json:"nonce"`
	AAD          hexed   `json:"aad"`
	InnerPacket  hexed   `json:"inner_packet"`
	NextHeader   byte    `json:"next_header"`
	PadLen       int     `json:"pad_len"`
	ESPPlaintext hexed   `json:"esp_plaintext"`
	UDPPayload   hexed   `json:"udp_payload"`

	cipher esp.Cipher
	spi    uint32
}

type hexed []byte

func (h *hexed) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

// seq64 is the full sequence number (seq_hi‖seq_lo).
func (v *vector) seq64() uint64 {
	if v.SeqHi == nil {
		return uint64(v.Seq)
	}
	return uint64(*v.SeqHi)<<32 | uint64(v.Seq)
}

var aeadNames = map[string]esp.Cipher{
	"gcm128": esp.AES128GCM,
	"gcm256": esp.AES256GCM,
	"chacha": esp.ChaCha20Poly1305,
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/esp-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []vector }
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("esp-vectors.json: %v", err)
	}
	if len(file.Vectors) != 50 {
		t.Fatalf("got %d vectors, want 50", len(file.Vectors))
	}
	for i := range file.Vectors {
		v := &file.Vectors[i]
		c, ok := aeadNames[v.AEAD]
		if !ok {
			t.Fatalf("%s: unknown aead %q", v.Name, v.AEAD)
		}
		spi, err := strconv.ParseUint(v.SPI, 0, 32)
		if err != nil {
			t.Fatalf("%s: spi: %v", v.Name, err)
		}
		v.cipher, v.spi = c, uint32(spi)
		if v.ESN != (v.SeqHi != nil) {
			t.Fatalf("%s: esn %v but seq_hi %v", v.Name, v.ESN, v.SeqHi)
		}
	}
	return file.Vectors
}

// newIn returns an InSA for v whose window makes InferHigh give v's seq_hi,
// as the kernel's state did (the capture started ESN SAs at seq_hi 1).
func newIn(t testing.TB, v *vector, esn bool, keymat []byte) *esp.InSA {
	t.Helper()
	in, err := esp.NewInSA(v.cipher, v.spi, keymat, esn, 1024)
	if err != nil {
		t.Fatalf("%s: NewInSA: %v", v.Name, err)
	}
	if esn && v.SeqHi != nil {
		esp.ResetReplay(in, uint64(*v.SeqHi)<<32)
	}
	return in
}

func TestVectorsOpen(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			if k := esp.Classify(v.UDPPayload); k != esp.KindESP {
				t.Fatalf("Classify = %v, want esp", k)
			}
			if spi, ok := esp.PeekSPI(v.UDPPayload); !ok || spi != v.spi {
				t.Fatalf("PeekSPI = %#x, %v; want %#x, true", spi, ok, v.spi)
			}
			in := newIn(t, &v, v.ESN, v.KeyMaterial)
			pkt := bytes.Clone(v.UDPPayload)
			inner, nh, err := in.Open(pkt)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(inner, v.InnerPacket) {
				t.Fatalf("inner:\ngot  %x\nwant %x", inner, v.InnerPacket)
			}
			if nh != v.NextHeader {
				t.Fatalf("next header: got %d, want %d", nh, v.NextHeader)
			}
			// Open decrypts in place: the plaintext with its trailer sits
			// between the IV and the ICV.
			if pt := pkt[esp.Headroom : len(pkt)-esp.ICVLen]; !bytes.Equal(pt, v.ESPPlaintext) {
				t.Fatalf("esp plaintext:\ngot  %x\nwant %x", pt, v.ESPPlaintext)
			}
			if got := len(v.ESPPlaintext) - len(v.InnerPacket) - 2; got != v.PadLen {
				t.Fatalf("pad: got %d, want %d", got, v.PadLen)
			}
			// The same packet again is a replay.
			if _, _, err := in.Open(bytes.Clone(v.UDPPayload)); !errors.Is(err, esp.ErrReplay) {
				t.Fatalf("second Open: got %v, want ErrReplay", err)
			}
		})
	}
}

// TestVectorsSeal re-seals each inner packet with the vector's SPI, sequence
// number and IV and expects the kernel's bytes exactly.
func TestVectorsSeal(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			out, err := esp.NewOutSA(v.cipher, v.spi, v.KeyMaterial, v.ESN)
			if err != nil {
				t.Fatalf("NewOutSA: %v", err)
			}
			esp.SetIVMask(out, binary.BigEndian.Uint64(v.IV)^v.seq64())
			esp.SetNextSeq(out, v.seq64())
			n := len(v.InnerPacket)
			buf := make([]byte, esp.Headroom+n+esp.Tailroom)
			copy(buf[esp.Headroom:], v.InnerPacket)
			got, err := out.Seal(buf, esp.Headroom, n)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if !bytes.Equal(got, v.UDPPayload) {
				t.Fatalf("Seal:\ngot  %x\nwant %x", got, v.UDPPayload)
			}
			if len(got) != esp.SealedLen(n) {
				t.Fatalf("len: got %d, SealedLen(%d) = %d", len(got), n, esp.SealedLen(n))
			}
		})
	}
}

// TestVectorsInOrder opens each direction's five packets on one SA, as the
// kernel received them.
func TestVectorsInOrder(t *testing.T) {
	vs := loadVectors(t)
	for i := 0; i < len(vs); i += 5 {
		in := newIn(t, &vs[i], vs[i].ESN, vs[i].KeyMaterial)
		for _, v := range vs[i : i+5] {
			if v.spi != vs[i].spi || !bytes.Equal(v.KeyMaterial, vs[i].KeyMaterial) {
				t.Fatalf("%s: not the same SA as %s", v.Name, vs[i].Name)
			}
			inner, _, err := in.Open(bytes.Clone(v.UDPPayload))
			if err != nil || !bytes.Equal(inner, v.InnerPacket) {
				t.Fatalf("%s: Open = %x, %v; want the inner packet", v.Name, inner, err)
			}
		}
	}
}

// TestVectorsWrongForm shows that the layout details matter: the other AAD
// form (8 vs 12 bytes), the wrong seq_hi, and the salt read from the front of
// the key material all fail authentication.
func TestVectorsWrongForm(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			// Other AAD form. A non-ESN vector opened as ESN gets seq_hi 0
			// (12-byte AAD); an ESN vector opened as non-ESN an 8-byte AAD.
			in := newIn(t, &v, !v.ESN, v.KeyMaterial)
			if _, _, err := in.Open(bytes.Clone(v.UDPPayload)); !errors.Is(err, esp.ErrAuth) {
				t.Errorf("other AAD form (esn=%v): got %v, want ErrAuth", !v.ESN, err)
			}
			if v.ESN { // right form, wrong seq_hi (a fresh window infers 0)
				in, err := esp.NewInSA(v.cipher, v.spi, v.KeyMaterial, true, 1024)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := in.Open(bytes.Clone(v.UDPPayload)); !errors.Is(err, esp.ErrAuth) {
					t.Errorf("seq_hi 0: got %v, want ErrAuth", err)
				}
			}
			km := v.KeyMaterial
			saltFirst := append(bytes.Clone(km[len(km)-4:]), km[:len(km)-4]...)
			in = newIn(t, &v, v.ESN, saltFirst)
			if _, _, err := in.Open(bytes.Clone(v.UDPPayload)); !errors.Is(err, esp.ErrAuth) {
				t.Errorf("salt-first key: got %v, want ErrAuth", err)
			}
			// The authentic packet still opens: no failure consumed its seq.
			in = newIn(t, &v, v.ESN, v.KeyMaterial)
			if _, _, err := in.Open(bytes.Clone(v.UDPPayload)); err != nil {
				t.Errorf("authentic packet: %v", err)
			}
		})
	}
}

// TestVectorsFields cross-checks the vector file against itself (nonce =
// salt‖IV, AAD = SPI‖seq, the packet header), so a broken copy is noticed.
func TestVectorsFields(t *testing.T) {
	for _, v := range loadVectors(t) {
		km := v.KeyMaterial
		if len(km) != v.cipher.KeyLen() {
			t.Errorf("%s: key material %d bytes, want %d", v.Name, len(km), v.cipher.KeyLen())
		}
		if want := append(bytes.Clone(km[len(km)-4:]), v.IV...); !bytes.Equal(v.Nonce, want) {
			t.Errorf("%s: nonce %x, want salt‖iv %x", v.Name, v.Nonce, want)
		}
		aad := binary.BigEndian.AppendUint32(nil, v.spi)
		if v.SeqHi != nil {
			aad = binary.BigEndian.AppendUint32(aad, *v.SeqHi)
		}
		aad = binary.BigEndian.AppendUint32(aad, v.Seq)
		if !bytes.Equal(v.AAD, aad) {
			t.Errorf("%s: aad %x, want %x", v.Name, v.AAD, aad)
		}
		if !bytes.Equal(v.UDPPayload[:4], aad[:4]) || !bytes.Equal(v.UDPPayload[4:8], aad[len(aad)-4:]) {
			t.Errorf("%s: header %x does not match aad %x", v.Name, v.UDPPayload[:8], aad)
		}
		if !bytes.Equal(v.UDPPayload[8:16], v.IV) {
			t.Errorf("%s: IV on the wire %x, want %x", v.Name, v.UDPPayload[8:16], v.IV)
		}
	}
}

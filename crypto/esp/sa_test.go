package esp_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/drovernet/drover/crypto/esp"
)

var ciphers = []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305}

const testSPI = 0x00000a01

// testKey returns patterned key material (key ‖ salt) for c.
func testKey(c esp.Cipher) []byte {
	k := make([]byte, c.KeyLen())
	for i := range k {
		k[i] = byte(i*7 + int(c))
	}
	return k
}

func newPair(t testing.TB, c esp.Cipher, esn bool, window int) (*esp.OutSA, *esp.InSA) {
	t.Helper()
	out, err := esp.NewOutSA(c, testSPI, testKey(c), esn)
	if err != nil {
		t.Fatalf("NewOutSA(%v): %v", c, err)
	}
	in, err := esp.NewInSA(c, testSPI, testKey(c), esn, window)
	if err != nil {
		t.Fatalf("NewInSA(%v): %v", c, err)
	}
	return out, in
}

// ipv4 returns an n-byte packet with an IPv4 version nibble (version 6 if v6).
func ipv4(n int, v6 bool) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i)
	}
	p[0] = 0x45
	if v6 {
		p[0] = 0x60
	}
	return p
}

// seal copies inner behind Headroom in a fresh buffer and seals it.
func seal(t testing.TB, out *esp.OutSA, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
	copy(buf[esp.Headroom:], inner)
	pkt, err := out.Seal(buf, esp.Headroom, len(inner))
	if err != nil {
		t.Fatalf("Seal(%d bytes): %v", len(inner), err)
	}
	return pkt
}

// craft builds an ESP packet with the raw AEAD, independently of Seal, so
// tests can send what Seal never would (odd trailers, seq 0, …).
func craft(t testing.TB, c esp.Cipher, keymat []byte, spi uint32, seq uint64, esn bool, plaintext []byte) []byte {
	t.Helper()
	key, salt := keymat[:len(keymat)-4], keymat[len(keymat)-4:]
	var a cipher.AEAD
	var err error
	if c == esp.ChaCha20Poly1305 {
		a, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			a, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	hdr := binary.BigEndian.AppendUint32(nil, spi)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(seq))
	iv := binary.BigEndian.AppendUint64(nil, seq^0x0123456789abcdef)
	aad := bytes.Clone(hdr)
	if esn {
		aad = binary.BigEndian.AppendUint32(hdr[:4:4], uint32(seq>>32))
		aad = binary.BigEndian.AppendUint32(aad, uint32(seq))
	}
	nonce := append(bytes.Clone(salt), iv...)
	pkt := append(append(hdr, iv...), a.Seal(nil, nonce, plaintext, aad)...)
	return pkt
}

// trailer returns inner ‖ pad ‖ pad_len ‖ nh with the given pad bytes.
func trailer(inner, pad []byte, nh byte) []byte {
	p := append(bytes.Clone(inner), pad...)
	return append(p, byte(len(pad)), nh)
}

func TestCipherNames(t *testing.T) {
	for _, c := range ciphers {
		got, err := esp.ParseCipher(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCipher(%q) = %v, %v; want %v", c.String(), got, err, c)
		}
	}
	want := map[esp.Cipher]struct {
		name   string
		keyLen int
	}{
		esp.AES128GCM:        {"aes-128-gcm", 20},
		esp.AES256GCM:        {"aes-256-gcm", 36},
		esp.ChaCha20Poly1305: {"chacha20-poly1305", 36},
		0:                    {"Cipher(0)", 0},
		9:                    {"Cipher(9)", 0},
	}
	for c, w := range want {
		if c.String() != w.name || c.KeyLen() != w.keyLen {
			t.Errorf("Cipher %d: got %q/%d, want %q/%d", c, c.String(), c.KeyLen(), w.name, w.keyLen)
		}
	}
	for _, s := range []string{"", "aes-128", "AES-128-GCM", "Cipher(1)", "rfc4106(gcm(aes))"} {
		if _, err := esp.ParseCipher(s); !errors.Is(err, esp.ErrCipher) || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseCipher(%q): got %v, want ErrCipher naming the input", s, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		c       esp.Cipher
		spi     uint32
		keyLen  int
		esn     bool
		window  int
		wantErr error  // nil: any error
		wantMsg string // substring
	}{
		{"gcm128 no salt", esp.AES128GCM, 1, 16, false, 32, esp.ErrKey, "needs 20 bytes"},
		{"gcm128 long", esp.AES128GCM, 1, 21, false, 32, esp.ErrKey, "got 21"},
		{"gcm256 no salt", esp.AES256GCM, 1, 32, false, 32, esp.ErrKey, "needs 36 bytes"},
		{"gcm256 as gcm128", esp.AES256GCM, 1, 20, false, 32, esp.ErrKey, "got 20"},
		{"chacha no salt", esp.ChaCha20Poly1305, 1, 32, false, 32, esp.ErrKey, "chacha20-poly1305 needs 36"},
		{"empty key", esp.ChaCha20Poly1305, 1, 0, false, 32, esp.ErrKey, "got 0"},
		{"unknown cipher", 0, 1, 20, false, 32, esp.ErrCipher, "cipher 0"},
		{"cipher 4", 4, 1, 36, false, 32, esp.ErrCipher, "cipher 4"},
		{"spi 0", esp.AES128GCM, 0, 20, false, 32, nil, "SPI 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			km := make([]byte, tc.keyLen)
			_, errOut := esp.NewOutSA(tc.c, tc.spi, km, tc.esn)
			_, errIn := esp.NewInSA(tc.c, tc.spi, km, tc.esn, tc.window)
			for _, err := range []error{errOut, errIn} {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("got %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
				}
			}
		})
	}
	km := testKey(esp.AES128GCM)
	for _, w := range []struct {
		esn    bool
		window int
		msg    string
	}{{true, 0, "ESN needs a replay window"}, {false, -1, "out of range"}, {false, 1<<16 + 1, "out of range"}} {
		if _, err := esp.NewInSA(esp.AES128GCM, 1, km, w.esn, w.window); err == nil || !strings.Contains(err.Error(), w.msg) {
			t.Errorf("NewInSA(esn %v, window %d): got %v, want %q", w.esn, w.window, err, w.msg)
		}
	}
}

func TestGeometry(t *testing.T) {
	if got := esp.MaxInner(1500 - 20 - 8); got != 1438 {
		t.Errorf("MaxInner(1472) = %d, want 1438 (kernel tunnel MTU on a 1500 underlay)", got)
	}
	if got := esp.SealedLen(1438); got != 1472 {
		t.Errorf("SealedLen(1438) = %d, want 1472", got)
	}
	if got := esp.SealedLen(84); got != 16+84+2+2+16 {
		t.Errorf("SealedLen(84) = %d, want %d", got, 16+84+2+2+16)
	}
	for p := -5; p < 2000; p++ {
		m := esp.MaxInner(p)
		if m == 0 {
			if p >= esp.SealedLen(1) {
				t.Fatalf("MaxInner(%d) = 0, but SealedLen(1) = %d fits", p, esp.SealedLen(1))
			}
			continue
		}
		if esp.SealedLen(m) > p || esp.SealedLen(m+1) <= p {
			t.Fatalf("MaxInner(%d) = %d: SealedLen %d, SealedLen(+1) %d", p, m, esp.SealedLen(m), esp.SealedLen(m+1))
		}
	}
	if esp.Headroom != 16 || esp.Tailroom != 21 || esp.ICVLen != 16 {
		t.Errorf("Headroom %d Tailroom %d ICVLen %d, want 16 21 16", esp.Headroom, esp.Tailroom, esp.ICVLen)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		want esp.Kind
		spi  uint32
	}{
		{"empty", nil, esp.KindNonESP, 0},
		{"keepalive", []byte{0xff}, esp.KindKeepalive, 0},
		{"one other byte", []byte{0xfe}, esp.KindNonESP, 0},
		{"two 0xff", []byte{0xff, 0xff}, esp.KindNonESP, 0},
		{"8 bytes", []byte{0, 0, 0x0a, 1, 0, 0, 0, 1}, esp.KindNonESP, 0},
		{"9 bytes", []byte{0, 0, 0x0a, 1, 0, 0, 0, 1, 9}, esp.KindESP, 0x0a01},
		{"non-ESP marker, IKE", append([]byte{0, 0, 0, 0}, []byte("IKEDxxxxxxxxxxxx")...), esp.KindNonESP, 0},
		{"SPI 0xff000000", []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0}, esp.KindESP, 0xff000000},
	}
	for _, tc := range tests {
		if got := esp.Classify(tc.p); got != tc.want {
			t.Errorf("%s: Classify = %v, want %v", tc.name, got, tc.want)
		}
		spi, ok := esp.PeekSPI(tc.p)
		if ok != (tc.want == esp.KindESP) || spi != tc.spi {
			t.Errorf("%s: PeekSPI = %#x, %v; want %#x, %v", tc.name, spi, ok, tc.spi, tc.want == esp.KindESP)
		}
	}
	for k, s := range map[esp.Kind]string{esp.KindESP: "esp", esp.KindKeepalive: "keepalive", esp.KindNonESP: "non-esp", 0: "Kind(0)"} {
		if k.String() != s {
			t.Errorf("Kind %d: String = %q, want %q", k, k.String(), s)
		}
	}
}

// TestRoundTrip seals and opens every inner length from 1 to 300 and a few
// large ones, IPv4 and IPv6, with and without ESN.
func TestRoundTrip(t *testing.T) {
	for _, c := range ciphers {
		for _, esn := range []bool{false, true} {
			out, in := newPair(t, c, esn, 1024)
			lens := []int{1438, 1500, 9000, 65535}
			for n := 1; n <= 300; n++ {
				lens = append(lens, n)
			}
			for _, n := range lens {
				inner := ipv4(n, n%2 == 0)
				pkt := seal(t, out, inner)
				if len(pkt) != esp.SealedLen(n) || len(pkt)%4 != 0 {
					t.Fatalf("%v esn %v n %d: sealed %d bytes, SealedLen %d", c, esn, n, len(pkt), esp.SealedLen(n))
				}
				got, nh, err := in.Open(pkt)
				wantNH := byte(4)
				if n%2 == 0 {
					wantNH = 41
				}
				if err != nil || !bytes.Equal(got, inner) || nh != wantNH {
					t.Fatalf("%v esn %v n %d: Open = %d bytes, nh %d, %v; want %d bytes, nh %d", c, esn, n, len(got), nh, err, n, wantNH)
				}
			}
		}
	}
}

func TestSealPadding(t *testing.T) {
	// The kernel's pads for inner lengths 84..87 were 2, 1, 0, 3 (pad
	// bytes 1, 2, 3); check the plaintext Open leaves behind.
	for n, wantPad := range map[int]int{84: 2, 85: 1, 86: 0, 87: 3, 1: 1, 2: 0, 3: 3} {
		out, in := newPair(t, esp.AES128GCM, false, 32)
		pkt := seal(t, out, ipv4(n, false))
		if _, _, err := in.Open(pkt); err != nil {
			t.Fatal(err)
		}
		pt := pkt[esp.Headroom : len(pkt)-esp.ICVLen]
		want := trailer(ipv4(n, false), []byte{1, 2, 3}[:wantPad], 4)
		if !bytes.Equal(pt, want) {
			t.Errorf("n %d: plaintext tail %x, want %x", n, pt[n:], want[n:])
		}
	}
}

func TestSealErrors(t *testing.T) {
	out, _ := newPair(t, esp.AES128GCM, false, 32)
	tests := []struct {
		name    string
		buf     []byte
		off, n  int
		wantErr error
	}{
		{"no headroom", make([]byte, 15+84+21), 15, 84, esp.ErrBuffer},
		{"negative off", make([]byte, 200), -1, 84, esp.ErrBuffer},
		{"tailroom short by one", make([]byte, 16+84+2+2+16-1), 16, 84, esp.ErrBuffer},
		{"n beyond cap", make([]byte, 100), 16, 101, esp.ErrBuffer},
		{"empty inner", make([]byte, 100), 16, 0, esp.ErrShort},
		{"version 5", append(make([]byte, 16), 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 16, 4, esp.ErrNextHeader},
	}
	for _, tc := range tests {
		if _, err := out.Seal(tc.buf, tc.off, tc.n); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	// Exactly the needed tailroom (pad 2) is enough, and failed calls used
	// no sequence number.
	buf := make([]byte, 16+84+2+2+16)
	copy(buf[16:], ipv4(84, false))
	pkt, err := out.Seal(buf[:16+84], 16, 84) // len may end at the packet; cap counts
	if err != nil {
		t.Fatalf("exact tailroom: %v", err)
	}
	if seq := binary.BigEndian.Uint32(pkt[4:8]); seq != 1 {
		t.Errorf("first seq after failed Seals = %d, want 1", seq)
	}
}

// TestOpenShort feeds every prefix of a valid packet: below the minimum is
// ErrShort, anything longer fails authentication; nothing panics.
func TestOpenShort(t *testing.T) {
	for _, c := range ciphers {
		out, in := newPair(t, c, false, 32)
		pkt := seal(t, out, ipv4(40, false))
		for n := range len(pkt) {
			_, _, err := in.Open(bytes.Clone(pkt[:n]))
			want := esp.ErrAuth
			if n < esp.Headroom+2+esp.ICVLen {
				want = esp.ErrShort
			}
			if !errors.Is(err, want) {
				t.Fatalf("%v: Open(%d of %d bytes) = %v, want %v", c, n, len(pkt), err, want)
			}
		}
		if _, _, err := in.Open(pkt); err != nil {
			t.Fatalf("%v: whole packet after prefixes: %v", c, err)
		}
	}
}

// TestOpenTampered flips every bit of a sealed packet in turn. A flipped
// SPI bit is ErrSPI, every other flip ErrAuth (a seq flip may be stale, never
// accepted), and after all that the authentic packet opens: failures do not
// consume its sequence number (kernel: integrity-failed, then accepted).
func TestOpenTampered(t *testing.T) {
	for _, c := range ciphers {
		for _, esn := range []bool{false, true} {
			out, in := newPair(t, c, esn, 32)
			esp.SetNextSeq(out, 100)
			esp.ResetReplay(in, 99)
			inner := ipv4(41, true)
			pkt := seal(t, out, inner)
			for bit := range len(pkt) * 8 {
				bad := bytes.Clone(pkt)
				bad[bit/8] ^= 1 << (bit % 8)
				got, _, err := in.Open(bad)
				switch {
				case got != nil:
					t.Fatalf("%v esn %v bit %d: Open returned plaintext", c, esn, bit)
				case bit < 32 && !errors.Is(err, esp.ErrSPI):
					t.Fatalf("%v esn %v bit %d: got %v, want ErrSPI", c, esn, bit, err)
				case bit >= 32 && !errors.Is(err, esp.ErrAuth) && !errors.Is(err, esp.ErrStale):
					t.Fatalf("%v esn %v bit %d: got %v, want ErrAuth", c, esn, bit, err)
				}
			}
			got, nh, err := in.Open(pkt)
			if err != nil || !bytes.Equal(got, inner) || nh != 41 {
				t.Fatalf("%v esn %v: authentic packet after tampering: %v", c, esn, err)
			}
		}
	}
}

func TestOpenReplay(t *testing.T) {
	for _, c := range ciphers {
		out, in := newPair(t, c, false, 32)
		var pkts [][]byte
		for range 40 {
			pkts = append(pkts, seal(t, out, ipv4(60, false)))
		}
		open := func(i int, want error) {
			t.Helper()
			_, _, err := in.Open(bytes.Clone(pkts[i]))
			if !errors.Is(err, want) {
				t.Fatalf("%v: Open(seq %d) = %v, want %v", c, i+1, err, want)
			}
		}
		open(0, nil)
		open(0, esp.ErrReplay)
		open(39, nil)           // seq 40
		open(7, esp.ErrStale)   // seq 8: 40 − 8 = 32 ≥ W
		open(8, nil)            // seq 9: 31 < W, unseen
		open(8, esp.ErrReplay)  // seq 9 again
		open(20, nil)           // reordered inside the window
		open(39, esp.ErrReplay) // the highest again
	}
}

func TestWrongKey(t *testing.T) {
	for _, c := range ciphers {
		out, _ := newPair(t, c, false, 32)
		km := testKey(c)
		km[0] ^= 1
		in, err := esp.NewInSA(c, testSPI, km, false, 32)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := in.Open(seal(t, out, ipv4(100, false))); !errors.Is(err, esp.ErrAuth) {
			t.Errorf("%v wrong key: got %v, want ErrAuth", c, err)
		}
		km = testKey(c)
		km[len(km)-1] ^= 1 // salt
		in, _ = esp.NewInSA(c, testSPI, km, false, 32)
		if _, _, err := in.Open(seal(t, out, ipv4(100, false))); !errors.Is(err, esp.ErrAuth) {
			t.Errorf("%v wrong salt: got %v, want ErrAuth", c, err)
		}
		other, _ := newPair(t, esp.Cipher(1+int(c)%3), false, 32) // other cipher, its own key
		if _, _, err := in.Open(seal(t, other, ipv4(100, false))); !errors.Is(err, esp.ErrAuth) {
			t.Errorf("%v other cipher: got %v, want ErrAuth", c, err)
		}
	}
}

// TestOpenTrailer sends authentic packets with the trailers the kernel was
// tested with (shared/interop/README.md "Receive rules").
func TestOpenTrailer(t *testing.T) {
	v4 := ipv4(84, false)
	tests := []struct {
		name     string
		pt       []byte
		wantErr  error
		wantNH   byte
		consumed bool // the seq is used up (a resend is ErrReplay)
	}{
		{"pad 00 00 accepted", trailer(v4, []byte{0, 0}, 4), nil, 4, true},
		{"no padding, unaligned", trailer(v4, nil, 4), nil, 4, true},
		{"254 pad bytes", trailer(v4, make([]byte, 254), 4), nil, 4, true},
		{"nh 41 on IPv4 (parsed as IPv6 by the caller)", trailer(v4, []byte{1, 2}, 41), nil, 41, true},
		{"nh 59 dummy", trailer(v4, []byte{1, 2}, 59), esp.ErrNextHeader, 0, true},
		{"nh 255", trailer(v4, []byte{1, 2}, 255), esp.ErrNextHeader, 0, true},
		{"nh 0", trailer(v4, []byte{1, 2}, 0), esp.ErrNextHeader, 0, true},
		{"pad len covers everything", append(bytes.Clone(v4), 86, 4), esp.ErrPadding, 0, false},
		{"pad len leaves no inner", append(bytes.Clone(v4), 84, 4), esp.ErrPadding, 0, false},
		{"pad len 255", append(bytes.Clone(v4), 255, 4), esp.ErrPadding, 0, false},
		{"trailer only", []byte{0, 4}, esp.ErrPadding, 0, false},
		{"one inner byte", []byte{0x45, 0, 4}, nil, 4, true},
	}
	for _, c := range ciphers {
		for _, esn := range []bool{false, true} {
			for _, tc := range tests {
				in, err := esp.NewInSA(c, testSPI, testKey(c), esn, 32)
				if err != nil {
					t.Fatal(err)
				}
				pkt := craft(t, c, testKey(c), testSPI, 7, esn, tc.pt)
				inner, nh, err := in.Open(bytes.Clone(pkt))
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("%v esn %v %s: got %v, want %v", c, esn, tc.name, err, tc.wantErr)
				}
				if err == nil {
					wantInner := tc.pt[:len(tc.pt)-2-int(tc.pt[len(tc.pt)-2])]
					if !bytes.Equal(inner, wantInner) || nh != tc.wantNH {
						t.Fatalf("%v esn %v %s: got %d bytes nh %d, want %d bytes nh %d", c, esn, tc.name, len(inner), nh, len(wantInner), tc.wantNH)
					}
				}
				_, _, err = in.Open(bytes.Clone(pkt))
				if consumed := errors.Is(err, esp.ErrReplay); consumed != tc.consumed {
					t.Fatalf("%v esn %v %s: resend got %v, want consumed=%v", c, esn, tc.name, err, tc.consumed)
				}
			}
		}
	}
}

// TestSeqZero: seq 0 is dropped by a window (kernel XfrmInStateSeqError) and
// accepted with window 0, which also accepts duplicates.
func TestSeqZero(t *testing.T) {
	c := esp.AES256GCM
	pkt := craft(t, c, testKey(c), testSPI, 0, false, trailer(ipv4(20, false), []byte{1, 2}, 4))
	in, _ := esp.NewInSA(c, testSPI, testKey(c), false, 32)
	if _, _, err := in.Open(bytes.Clone(pkt)); !errors.Is(err, esp.ErrStale) {
		t.Errorf("seq 0, window 32: got %v, want ErrStale", err)
	}
	in, _ = esp.NewInSA(c, testSPI, testKey(c), false, 0)
	for i := range 3 {
		if _, _, err := in.Open(bytes.Clone(pkt)); err != nil {
			t.Errorf("seq 0, window 0, try %d: got %v, want nil", i, err)
		}
	}
}

func TestSeqExhausted(t *testing.T) {
	out, in := newPair(t, esp.ChaCha20Poly1305, false, 32)
	esp.SetNextSeq(out, math.MaxUint32)
	pkt := seal(t, out, ipv4(64, false))
	if seq := binary.BigEndian.Uint32(pkt[4:8]); seq != math.MaxUint32 {
		t.Fatalf("last seq = %#x, want 0xffffffff", seq)
	}
	if _, _, err := in.Open(pkt); err != nil {
		t.Fatalf("Open(seq 0xffffffff): %v", err)
	}
	buf := make([]byte, 200)
	buf[16] = 0x45
	for i := range 3 {
		if _, err := out.Seal(buf, 16, 64); !errors.Is(err, esp.ErrSeqExhausted) {
			t.Fatalf("Seal %d after 0xffffffff: got %v, want ErrSeqExhausted", i, err)
		}
	}
	// With ESN the 64-bit counter is the limit.
	out, _ = newPair(t, esp.ChaCha20Poly1305, true, 32)
	esp.SetNextSeq(out, math.MaxUint64)
	seal(t, out, ipv4(64, false))
	if _, err := out.Seal(buf, 16, 64); !errors.Is(err, esp.ErrSeqExhausted) {
		t.Fatalf("ESN Seal after 2^64-1: got %v, want ErrSeqExhausted", err)
	}
}

// TestESNWrapSeal crosses seq_lo 0xffffffff → 0 on an ESN SA: lo 0 goes on
// the wire, the IV stays seq XOR mask (as the kernel's did), the AAD carries
// seq_hi 1, and a receiver infers it, also for a late packet from before the
// wrap.
func TestESNWrapSeal(t *testing.T) {
	for _, c := range ciphers {
		out, in := newPair(t, c, true, 1024)
		mask := esp.IVMask(out)
		esp.SetNextSeq(out, 0xfffffffe)
		var pkts [][]byte
		for range 4 {
			pkts = append(pkts, seal(t, out, ipv4(50, false)))
		}
		for i, p := range pkts {
			seq := uint64(0xfffffffe) + uint64(i)
			if lo := binary.BigEndian.Uint32(p[4:8]); lo != uint32(seq) {
				t.Fatalf("%v packet %d: seq_lo %#x, want %#x", c, i, lo, uint32(seq))
			}
			if iv := binary.BigEndian.Uint64(p[8:16]); iv != seq^mask {
				t.Fatalf("%v packet %d: IV %#x, want seq^mask %#x", c, i, iv, seq^mask)
			}
		}
		for _, i := range []int{0, 2, 1, 3} { // hi 0, hi 1 (lo 0), late hi 0, hi 1
			if _, _, err := in.Open(bytes.Clone(pkts[i])); err != nil {
				t.Fatalf("%v: Open packet %d: %v", c, i, err)
			}
		}
		if _, _, err := in.Open(pkts[1]); !errors.Is(err, esp.ErrReplay) {
			t.Fatalf("%v: resend of seq 0xffffffff: got %v, want ErrReplay", c, err)
		}
		// A non-ESN receiver cannot open them (8-byte AAD).
		_, plain := newPair(t, c, false, 1024)
		if _, _, err := plain.Open(pkts[3]); !errors.Is(err, esp.ErrAuth) {
			t.Fatalf("%v: non-ESN Open of hi 1 packet: got %v, want ErrAuth", c, err)
		}
	}
}

// TestKernelESNWrapOpen replays the kernel experiment on a receiver: state
// hi 0 / lo 0xfffffff0; lo 0xfffffff8 (hi 0) accepted, lo 2 with AAD hi 1
// accepted, lo 3 with AAD hi 0 is an integrity failure (not a replay), lo
// 0xfffffffa (hi 0, older, across the wrap) accepted.
func TestKernelESNWrapOpen(t *testing.T) {
	c := esp.AES128GCM
	km := testKey(c)
	in, _ := esp.NewInSA(c, testSPI, km, true, 32)
	esp.ResetReplay(in, 0xfffffff0)
	pt := trailer(ipv4(84, false), []byte{1, 2}, 4)
	for _, s := range []struct {
		seq  uint64 // what the sender put in the AAD
		want error
	}{
		{0xfffffff8, nil},
		{1<<32 | 2, nil},
		{3, esp.ErrAuth},
		{0xfffffffa, nil},
		{0xfffffff8, esp.ErrReplay},
		{1<<32 | 3, nil},
	} {
		if _, _, err := in.Open(craft(t, c, km, testSPI, s.seq, true, pt)); !errors.Is(err, s.want) {
			t.Fatalf("seq %#x: got %v, want %v", s.seq, err, s.want)
		}
	}
}

// TestConcurrent seals from several goroutines on one OutSA (every sequence
// number used exactly once) and opens everything twice from several
// goroutines on one InSA (exactly one Open per packet succeeds).
func TestConcurrent(t *testing.T) {
	const workers, per = 4, 500
	out, in := newPair(t, esp.AES128GCM, true, 4096)
	pkts := make([][]byte, workers*per)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				buf := make([]byte, esp.Headroom+100+esp.Tailroom)
				copy(buf[esp.Headroom:], ipv4(100, false))
				p, err := out.Seal(buf, esp.Headroom, 100)
				if err != nil {
					t.Error(err)
					return
				}
				pkts[w*per+i] = p
			}
		})
	}
	wg.Wait()
	seen := make(map[uint32]bool)
	for _, p := range pkts {
		seq := binary.BigEndian.Uint32(p[4:8])
		if seen[seq] || seq == 0 || seq > workers*per {
			t.Fatalf("seq %d reused or out of range", seq)
		}
		seen[seq] = true
	}
	var mu sync.Mutex
	ok, replays := 0, 0
	for w := range workers {
		wg.Go(func() {
			for i := range pkts {
				p := pkts[(i+w*per/2)%len(pkts)]
				_, _, err := in.Open(bytes.Clone(p))
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, esp.ErrReplay):
					replays++
				default:
					t.Errorf("Open: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != len(pkts) || replays != (workers-1)*len(pkts) {
		t.Fatalf("got %d opened, %d replays; want %d, %d", ok, replays, len(pkts), (workers-1)*len(pkts))
	}
}

// TestResumeReserve: a resumed SA continues after the given number, never
// goes back, and stops at the reservation until it is raised.
func TestResumeReserve(t *testing.T) {
	key := make([]byte, esp.AES128GCM.KeyLen())
	s, err := esp.NewOutSA(esp.AES128GCM, 0x100, key, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(1000); err != nil {
		t.Fatal(err)
	}
	s.Reserve(1001)
	buf := make([]byte, esp.Headroom+20+esp.Tailroom)
	seal := func() error { // Seal encrypts in place: restore the version nibble
		buf[esp.Headroom] = 0x45
		_, err := s.Seal(buf, esp.Headroom, 20)
		return err
	}
	for want := uint64(1000); want <= 1001; want++ {
		if err := seal(); err != nil {
			t.Fatalf("seal %d: %v", want, err)
		}
		if got := s.Seq(); got != want {
			t.Fatalf("Seq: got %d, want %d", got, want)
		}
	}
	if err := seal(); !errors.Is(err, esp.ErrSeqReserve) {
		t.Fatalf("beyond the reservation: got %v, want esp.ErrSeqReserve", err)
	}
	if got := s.Seq(); got != 1001 {
		t.Fatalf("a refused Seal used a number: Seq %d, want 1001", got)
	}
	s.Reserve(500) // reservations only grow
	s.Reserve(2000)
	if err := seal(); err != nil {
		t.Fatalf("after raising the reservation: %v", err)
	}
	if err := s.Resume(10); err == nil {
		t.Fatal("Resume backwards: got nil error")
	}
	if err := s.Resume(1 << 40); !errors.Is(err, esp.ErrSeqExhausted) {
		t.Fatalf("Resume beyond 32 bits without ESN: got %v, want esp.ErrSeqExhausted", err)
	}
}

// TestSealTo seals segments that lie back to back in one buffer, as the
// router does with a GSO frame: each opens to exactly its inner packet, the
// bytes after each segment (the next segment) are as they were, and the
// output equals what Seal in place produces for the same sequence number.
func TestSealTo(t *testing.T) {
	for _, c := range ciphers {
		for _, esn := range []bool{false, true} {
			out, in := newPair(t, c, esn, esp.DefaultWindow)
			ref, _ := newPair(t, c, esn, esp.DefaultWindow)
			esp.SetIVMask(ref, esp.IVMask(out))
			for _, n := range []int{1, 2, 3, 4, 5, 83, 84, 1386, 1438} {
				const segs = 3
				src := make([]byte, segs*n+esp.MaxTrailer)
				for i := range src {
					src[i] = byte(i*13 + n)
				}
				for k := range segs {
					src[k*n] = 0x45
				}
				orig := bytes.Clone(src)
				for k := range segs {
					pkt := src[k*n : (k+1)*n]
					dst := make([]byte, esp.SealedLen(n))
					got, err := out.SealTo(dst, pkt)
					if err != nil {
						t.Fatalf("%v esn %v n %d seg %d: SealTo: %v", c, esn, n, k, err)
					}
					if !bytes.Equal(src, orig) {
						t.Fatalf("%v esn %v n %d seg %d: SealTo changed its source buffer", c, esn, n, k)
					}
					if len(got) != esp.SealedLen(n) || &got[0] != &dst[0] {
						t.Fatalf("%v esn %v n %d: got %d bytes (in dst: %v), want %d in dst", c, esn, n, len(got), &got[0] == &dst[0], esp.SealedLen(n))
					}
					want := seal(t, ref, pkt)
					if !bytes.Equal(got, want) {
						t.Fatalf("%v esn %v n %d seg %d: SealTo differs from Seal in place", c, esn, n, k)
					}
					inner, _, err := in.Open(bytes.Clone(got))
					if err != nil || !bytes.Equal(inner, pkt) {
						t.Fatalf("%v esn %v n %d seg %d: Open: %v, inner equal %v", c, esn, n, k, err, bytes.Equal(inner, pkt))
					}
				}
			}
		}
	}
}

func TestSealToErrors(t *testing.T) {
	out, _ := newPair(t, esp.AES128GCM, false, esp.DefaultWindow)
	pkt := ipv4(84, false)
	cases := []struct {
		name     string
		dst, pkt []byte
		want     error
	}{
		{"empty", make([]byte, 200), pkt[:0], esp.ErrShort},
		{"no room after the packet", make([]byte, 200), ipv4(84, false), esp.ErrBuffer},
		{"dst too small", make([]byte, esp.SealedLen(84)-1), append(ipv4(84, false), 0, 0, 0, 0, 0)[:84], esp.ErrBuffer},
		{"not IP", make([]byte, 200), append([]byte{0x15}, make([]byte, 90)...)[:84], esp.ErrNextHeader},
	}
	for _, tc := range cases {
		if _, err := out.SealTo(tc.dst, tc.pkt); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if seq := out.Seq(); seq != 0 {
		t.Errorf("failed SealTo calls used sequence numbers: Seq %d, want 0", seq)
	}
}

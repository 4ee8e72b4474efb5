package vxlan_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/drovernet/drover/router/vxlan"
)

// vector is one entry of testdata/vxlan-vectors.json, captured from a Linux
// vxlan device (shared/interop/vectors, see shared/interop/README.md).
type vector struct {
	Name          string `json:"name"`
	VNI           uint32 `json:"vni"`
	UDPDport      int    `json:"udp_dport"`
	FlagsWord     string `json:"vxlan_flags_word"`
	ReservedLow   int    `json:"reserved_low_byte"`
	InnerFrame    string `json:"inner_frame"`
	UDPPayloadHex string `json:"udp_payload"`
}

func loadVectors(tb testing.TB) []vector {
	tb.Helper()
	raw, err := os.ReadFile("testdata/vxlan-vectors.json")
	if err != nil {
		tb.Fatalf("read vectors: %v", err)
	}
	var file struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		tb.Fatalf("decode vectors: %v", err)
	}
	if len(file.Vectors) == 0 {
		tb.Fatal("no vectors in testdata/vxlan-vectors.json")
	}
	return file.Vectors
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func TestGoldenVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			payload := unhex(t, v.UDPPayloadHex)
			inner := unhex(t, v.InnerFrame)
			if got, want := len(payload), vxlan.HeaderLen+len(inner); got != want {
				t.Fatalf("udp_payload length: got %d, want %d (header + inner_frame)", got, want)
			}
			if v.UDPDport != vxlan.DefaultPort {
				t.Errorf("udp_dport: got %d, want %d", v.UDPDport, vxlan.DefaultPort)
			}
			if v.FlagsWord != "0x08000000" || v.ReservedLow != 0 {
				t.Errorf("vector flags %s / reserved %d: want 0x08000000 / 0", v.FlagsWord, v.ReservedLow)
			}

			var h vxlan.Header
			if err := h.Parse(payload); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if h.VNI != vxlan.DefaultVNI || h.VNI != v.VNI {
				t.Fatalf("VNI: got %d, want %d (vector says %d)", h.VNI, vxlan.DefaultVNI, v.VNI)
			}
			if !bytes.Equal(payload[vxlan.HeaderLen:], inner) {
				t.Fatalf("bytes after the header are not the inner frame")
			}

			// The other direction: what we send is byte-for-byte what Linux sent.
			put := make([]byte, vxlan.HeaderLen)
			h.Put(put)
			if !bytes.Equal(put, payload[:vxlan.HeaderLen]) {
				t.Fatalf("Put: got %x, want %x", put, payload[:vxlan.HeaderLen])
			}
			app := h.Append(nil)
			app = append(app, inner...)
			if !bytes.Equal(app, payload) {
				t.Fatalf("Append+inner: got %x, want %x", app, payload)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", vxlan.ErrShort},
		{"one byte short", "08000000000412", vxlan.ErrShort},
		{"I flag clear", "0000000000041200", vxlan.ErrFlags},
		// The two reserved-bit cases the kernel was shown to drop (rx_frame_errors).
		{"reserved flag bit 0x04", "0c00000000041200", vxlan.ErrFlags},
		{"reserved low bit of flag word", "0800000100041200", vxlan.ErrFlags},
		{"reserved bit in byte 1", "0880000000041200", vxlan.ErrFlags},
		{"reserved bit in byte 2", "0800010000041200", vxlan.ErrFlags},
		{"only reserved flags", "f700000000041200", vxlan.ErrFlags},
		{"reserved low byte", "08000000000412ff", vxlan.ErrReserved},
		{"reserved low byte 1", "0800000000041201", vxlan.ErrReserved},
		{"flags checked before reserved byte", "0c000000000412ff", vxlan.ErrFlags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := vxlan.Header{VNI: 7}
			err := h.Parse(unhex(t, tt.hex))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%s): got %v, want %v", tt.hex, err, tt.want)
			}
			if h.VNI != 7 {
				t.Fatalf("Parse error modified the header: got VNI %d, want 7", h.VNI)
			}
		})
	}
}

func TestVNIRange(t *testing.T) {
	for _, tt := range []struct {
		vni  uint32
		wire string
	}{
		{0, "0800000000000000"},
		{1, "0800000000000100"},
		{vxlan.DefaultVNI, "0800000000041200"},
		{vxlan.MaxVNI, "08000000ffffff00"},
	} {
		wire := unhex(t, tt.wire)
		var h vxlan.Header
		if err := h.Parse(wire); err != nil || h.VNI != tt.vni {
			t.Errorf("Parse(%s): got %d, %v; want %d, nil", tt.wire, h.VNI, err, tt.vni)
		}
		if got := (vxlan.Header{VNI: tt.vni}).Append(nil); !bytes.Equal(got, wire) {
			t.Errorf("Append(VNI %d): got %x, want %s", tt.vni, got, tt.wire)
		}
	}
}

func TestPutPanicsOnWideVNI(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Put with VNI 1<<24: no panic, want panic (would truncate the VNI)")
		}
	}()
	vxlan.Header{VNI: vxlan.MaxVNI + 1}.Put(make([]byte, vxlan.HeaderLen))
}

func TestAppendKeepsPrefix(t *testing.T) {
	b := []byte{0xaa, 0xbb}
	got := vxlan.Header{VNI: vxlan.DefaultVNI}.Append(b)
	if want := unhex(t, "aabb0800000000041200"); !bytes.Equal(got, want) {
		t.Fatalf("Append: got %x, want %x", got, want)
	}
}

func TestNoAllocs(t *testing.T) {
	payload := unhex(t, loadVectors(t)[0].UDPPayloadHex)
	buf := make([]byte, 0, 64)
	var h vxlan.Header
	if a := testing.AllocsPerRun(100, func() {
		if err := h.Parse(payload); err != nil {
			t.Fatal(err)
		}
		buf = h.Append(buf[:0])
		h.Put(buf)
	}); a != 0 {
		t.Fatalf("Parse+Append+Put: got %v allocs/op, want 0", a)
	}
}

func BenchmarkParse(b *testing.B) {
	payload := unhex(b, loadVectors(b)[0].UDPPayloadHex)
	var h vxlan.Header
	b.SetBytes(vxlan.HeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Parse(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	buf := make([]byte, vxlan.HeaderLen)
	h := vxlan.Header{VNI: vxlan.DefaultVNI}
	b.SetBytes(vxlan.HeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		h.Put(buf)
	}
}

// FuzzHeaderParse: attacker-controlled UDP payloads must never panic Parse,
// and every accepted header must re-encode to exactly the bytes it came from
// (parse → append → parse is a fix-point, and there is one valid encoding).
func FuzzHeaderParse(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(unhex(f, v.UDPPayloadHex)) // kernel-captured header + inner frame
	}
	f.Add([]byte{})                                                        // empty
	f.Add(make([]byte, vxlan.HeaderLen-1))                                 // one byte short
	f.Add([]byte{0x08, 0, 0, 0, 0, 0x04, 0x12, 0})                         // header only, VNI 1042
	f.Add([]byte{0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0})                      // VNI MaxVNI
	f.Add([]byte{0x00, 0, 0, 0, 0, 0x04, 0x12, 0})                         // I flag clear
	f.Add([]byte{0x0c, 0, 0, 0, 0, 0x04, 0x12, 0})                         // reserved flag bit (kernel drops)
	f.Add([]byte{0x08, 0, 0, 1, 0, 0x04, 0x12, 0})                         // reserved low flag bit (kernel drops)
	f.Add([]byte{0x08, 0, 0, 0, 0, 0x04, 0x12, 0xff})                      // reserved low byte non-zero
	f.Add([]byte{0x08, 0, 0, 0, 0, 0x04, 0x12, 0, 0xde, 0xad, 0xbe, 0xef}) // trailing payload
	f.Fuzz(func(t *testing.T, b []byte) {
		var h, h2 vxlan.Header
		if h.Parse(b) != nil {
			return
		}
		if h.VNI > vxlan.MaxVNI {
			t.Fatalf("Parse(%x): VNI %d exceeds 24 bits", b, h.VNI)
		}
		out := h.Append(nil)
		if !bytes.Equal(out, b[:vxlan.HeaderLen]) {
			t.Fatalf("Append after Parse(%x): got %x, want %x", b, out, b[:vxlan.HeaderLen])
		}
		if err := h2.Parse(out); err != nil || h2 != h {
			t.Fatalf("re-parse of %x: got %+v, %v; want %+v", b, h2, err, h)
		}
	})
}

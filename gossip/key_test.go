package gossip

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKey(t *testing.T) {
	k16 := bytes.Repeat([]byte{0xab}, 16)
	k24 := []byte("0123456789abcdefghijklmn")
	k32 := bytes.Repeat([]byte{0x5c}, 32)
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    []byte
		wantErr string
	}{
		{"hex 16", "abababababababababababababababab\n", 0o600, k16, ""},
		{"hex 32 upper, spaced", "5C5C5C5C 5C5C5C5C\n5C5C5C5C5C5C5C5C\t5C5C5C5C5C5C5C5C5C5C5C5C5C5C5C5C\n", 0o600, k32, ""},
		{"base64 32", FormatKey(k32) + "\n", 0o600, k32, ""},
		{"base64 24", FormatKey(k24), 0o400, k24, ""},
		{"base64 16 unpadded", strings.TrimRight(FormatKey(k16), "="), 0o600, k16, ""},
		{"hex 15 bytes", strings.Repeat("ab", 15), 0o600, nil, "key is 15 bytes, want 16, 24 or 32"},
		{"base64 20 bytes", FormatKey(make([]byte, 20)), 0o600, nil, "key is 20 bytes"},
		{"garbage", "not a key!", 0o600, nil, "neither hex nor base64"},
		{"empty", "\n", 0o600, nil, "empty key"},
		{"mode 0644", FormatKey(k32), 0o644, nil, "mode 0644 lets group or others access it; want 0600 or stricter"},
		{"mode 0640", FormatKey(k32), 0o640, nil, "mode 0640"},
		{"mode 0602", FormatKey(k32), 0o602, nil, "mode 0602"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cluster.key")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil { // WriteFile's mode passes through the umask
				t.Fatal(err)
			}
			got, err := LoadKey(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), p) {
					t.Fatalf("got %x, %v; want an error naming %s and containing %q", got, err, p, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, %v; want %x", got, err, tc.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope")
		if _, err := LoadKey(p); !os.IsNotExist(unwrapAll(err)) {
			t.Fatalf("got %v, want a not-exist error", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		d := t.TempDir()
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKey(d); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("got %v, want a not-a-regular-file error", err)
		}
	})
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		if next := u.Unwrap(); next != nil {
			err = next
		} else {
			return err
		}
	}
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("got %x and %x, want two different 32-byte keys", a, b)
	}
	back, err := ParseKey(FormatKey(a))
	if err != nil || !bytes.Equal(back, a) {
		t.Fatalf("ParseKey(FormatKey(k)): got %x, %v; want %x", back, err, a)
	}
}

package aesgcm_test

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/drovernet/drover/crypto/aesgcm"
)

// gcmSpecVectors are the test cases of McGrew and Viega, "The Galois/Counter
// Mode of Operation (GCM)" (revised, 2005), Appendix B, that use a 96-bit IV:
// 1-4 (AES-128), 7-10 (AES-192) and 13-16 (AES-256). Cases 5, 6, 11, 12,
// 17 and 18 use 64- and 480-bit IVs, which a 12-byte-nonce AEAD cannot
// take.
var gcmSpecVectors = []struct {
	name            string
	key, iv, pt, ad string
	ct, tag         string
}{
	{
		name: "case1", key: "00000000000000000000000000000000", iv: "000000000000000000000000",
		tag: "58e2fccefa7e3061367f1d57a4e7455a",
	},
	{
		name: "case2", key: "00000000000000000000000000000000", iv: "000000000000000000000000",
		pt:  "00000000000000000000000000000000",
		ct:  "0388dace60b6a392f328c2b971b2fe78",
		tag: "ab6e47d42cec13bdf53a67b21257bddf",
	},
	{
		name: "case3", key: "feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ct: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e" +
			"21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
		tag: "4d5c2af327cd64a62cf35abd2ba6fab4",
	},
	{
		name: "case4", key: "feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		ad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e" +
			"21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
		tag: "5bc94fbc3221a5db94fae95ae7121a47",
	},
	{
		name: "case7", key: "000000000000000000000000000000000000000000000000", iv: "000000000000000000000000",
		tag: "cd33b28ac773f74ba00ed1f312572435",
	},
	{
		name: "case8", key: "000000000000000000000000000000000000000000000000", iv: "000000000000000000000000",
		pt:  "00000000000000000000000000000000",
		ct:  "98e7247c07f0fe411c267e4384b0f600",
		tag: "2ff58d80033927ab8ef4d4587514f0fb",
	},
	{
		name: "case9", key: "feffe9928665731c6d6a8f9467308308feffe9928665731c", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ct: "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c" +
			"7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256",
		tag: "9924a7c8587336bfb118024db8674a14",
	},
	{
		name: "case10", key: "feffe9928665731c6d6a8f9467308308feffe9928665731c", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		ad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c" +
			"7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
		tag: "2519498e80f1478f37ba55bd6d27618c",
	},
	{
		name: "case13", key: "0000000000000000000000000000000000000000000000000000000000000000", iv: "000000000000000000000000",
		tag: "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		name: "case14", key: "0000000000000000000000000000000000000000000000000000000000000000", iv: "000000000000000000000000",
		pt:  "00000000000000000000000000000000",
		ct:  "cea7403d4d606b6e074ec5d3baf39d18",
		tag: "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		name: "case15", key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
		tag: "b094dac5d93471bdec1a502270e3cc6c",
	},
	{
		name: "case16", key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		ad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		tag: "76fc6ece0f4e1768cddf8853bb2d551b",
	},
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGCMSpecVectors(t *testing.T) {
	t.Logf("Accelerated() = %v", aesgcm.Accelerated())
	for _, v := range gcmSpecVectors {
		t.Run(v.name, func(t *testing.T) {
			key, iv, pt, ad := unhex(t, v.key), unhex(t, v.iv), unhex(t, v.pt), unhex(t, v.ad)
			want := append(unhex(t, v.ct), unhex(t, v.tag)...)
			a, err := aesgcm.New(key)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Seal(nil, iv, pt, ad); !bytes.Equal(got, want) {
				t.Errorf("Seal: got %x, want %x", got, want)
			}
			got, err := a.Open(nil, iv, want, ad)
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("Open: got %x, %v; want %x, nil", got, err, pt)
			}
			// The vectors check the standard library too, so a typo in
			// them would show as a failure on both sides.
			s := newPair(t, key).std
			if got := s.Seal(nil, iv, pt, ad); !bytes.Equal(got, want) {
				t.Errorf("stdlib Seal: got %x, want %x", got, want)
			}
		})
	}
}

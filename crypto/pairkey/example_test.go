package pairkey_test

import (
	"bytes"
	"fmt"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
)

// Two hosts derive the SAs between them from what each publishes, and the
// receiver's SPI for each sender is settled over all its senders.
func Example() {
	clusterKey := bytes.Repeat([]byte{0x5a}, 32) // from cluster.key_file
	newLocal := func(seed byte, epoch uint32) pairkey.Local {
		id, _ := pairkey.NewKeyPair(bytes.NewReader(bytes.Repeat([]byte{seed}, 32))) // nil: crypto/rand
		eph, _ := pairkey.NewKeyPair(bytes.NewReader(bytes.Repeat([]byte{seed + 1}, 32)))
		return pairkey.Local{Identity: id, Ephemeral: eph, Epoch: epoch}
	}
	a, b, c := newLocal(1, 1), newLocal(3, 1), newLocal(5, 1)

	outA, _ := pairkey.Outbound(esp.AES128GCM, clusterKey, a, b.Party()) // at A
	inB, _ := pairkey.Inbound(esp.AES128GCM, clusterKey, b, a.Party())   // at B
	fmt.Println("same key:", bytes.Equal(outA.Key, inB.Key), len(outA.Key), "bytes")

	// B's senders are A and C; anyone in the cluster can compute this map.
	candA, _ := pairkey.SPICandidates(clusterKey, a.Party(), b.Party())
	candC, _ := pairkey.SPICandidates(clusterKey, c.Party(), b.Party())
	spis := pairkey.AssignSPIs(map[string][]uint32{"host-a": candA, "host-c": candC})
	fmt.Println("A's SPI at B is its first candidate:", spis["host-a"] == outA.SPI)
	// Output:
	// same key: true 20 bytes
	// A's SPI at B is its first candidate: true
}

//go:build !amd64 || purego

package packet

const (
	haveVec  = false
	vecBlock = 64
	vecMin   = 256
)

func sumVec([]byte) uint64 { panic("packet: no vector checksum on this platform") }

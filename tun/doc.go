// Package tun owns drover's TUN device: Open creates it with the kernel's
// offloads (IFF_VNET_HDR, TSO and USO) and FrameDevice reads and writes
// whole frames, a virtio-net header and an IP packet of up to 64 KiB, which
// the router segments and coalesces itself (router/gso), fused with sealing
// and opening; Configure, AddRoute, DelRoute and SetAddrs manage the
// interface's MTU, addresses and routes through netlink. tun/tuntest has an
// in-memory FrameDevice, so router tests need no root.
//
// drover once read and wrote through golang.zx2c4.com/wireguard/tun, whose
// Read splits each GSO frame into one buffer per segment (a copy and a
// checksum pass) and whose Write merges segments by copying them together;
// handing the router the raw frame instead saves both copies (see
// docs/benchmarks.md).
package tun

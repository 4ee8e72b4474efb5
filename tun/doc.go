// Package tun owns drover's packet devices: a batch-oriented Device (the
// shape of golang.zx2c4.com/wireguard/tun, with its Linux offloads: the
// virtio-net header, TSO in and GRO out), creation of the TUN interface, and
// its addresses, MTU and routes through netlink. tun/tuntest has an in-memory
// Device so router tests need no root.
package tun

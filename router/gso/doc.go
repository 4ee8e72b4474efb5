// Package gso owns the TUN device's offload frames: the virtio-net header
// in front of every packet the Linux TUN device hands over or takes
// (include/uapi/linux/virtio_net.h), the segmentation of a GSO super-packet
// into the packets that go on the wire (Splitter), and the coalescing of
// received TCP segments into one super-packet for the kernel (Coalescer).
//
// The router does this itself, rather than through a TUN library, so that
// each segment is built and checksummed exactly once, next to where it is
// sealed or framed, and so that received segments are handed to the kernel
// where they lie (a gather write) instead of being copied into one buffer.
//
// Nothing here allocates per packet. The checksum rules are those of
// RFC 1071 and RFC 9293 §3.1; the segmentation reproduces what the kernel's
// own software GSO (tcp_gso_segment, __udp_gso_segment) puts on the wire.
package gso

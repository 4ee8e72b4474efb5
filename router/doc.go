// Package router is drover's data plane: the forwarding table (prefix →
// peer), the egress pipeline (TUN → lookup → segmentation → ESP seal or
// VXLAN frame → UDP) and the ingress pipeline (UDP → demux → replay check
// and open, or VXLAN decap → inner source check → coalescing → TUN), ICMP
// "too big" errors, ARP answers over VXLAN, and per-reason drop counters.
//
// Both pipelines run to completion per batch, one goroutine each, and
// allocate nothing per packet: each allocates its buffers once. Egress
// reads one TUN frame (up to a 64 KiB TCP super-packet), cuts it with
// gso.Splitter and seals each segment straight out of the frame into an
// output area (or, for VXLAN, sends the segment's headers and its body in
// place with a gather write), so the payload is read once by the cipher and
// never copied by the router. Ingress opens datagrams in place in the
// receive buffers (UDP GRO hands over up to 64 KiB of datagrams at once)
// and gso.Coalescer hands runs of TCP segments to the kernel as one frame,
// again gathered from where they lie. Peers are held in an immutable
// snapshot that SetPeers replaces whole; each batch does one atomic load.
//
// It does not own the devices it moves packets between (tun.FrameDevice
// and udp.Conn are passed in), nor the control plane that decides who the
// peers are.
package router

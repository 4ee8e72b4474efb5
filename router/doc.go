// Package router is drover's data plane: the forwarding table (prefix →
// peer), the egress pipeline (TUN → lookup → ESP seal or VXLAN frame → UDP)
// and the ingress pipeline (UDP → demux → replay check and open, or VXLAN
// decap → inner source check → TUN), ICMP "too big" errors, ARP answers over
// VXLAN, and per-reason drop counters.
//
// Both pipelines are batch-first and allocate nothing per packet: each
// goroutine allocates its buffers once, with headroom in front of every
// packet so the ESP header or the VXLAN and Ethernet headers are written in
// place, and tailroom behind it for the ESP trailer. Peers are held in an
// immutable snapshot that SetPeers replaces whole; each batch does one atomic
// load of it.
//
// It does not own the devices it moves packets between (tun.Device and
// udp.Conn are passed in), nor the control plane that decides who the peers
// are.
package router

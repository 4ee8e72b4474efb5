// Package kernelpeer runs Linux-kernel reference peers for drover's two wire
// formats, so integration tests can prove drover interoperates with the
// kernel and not just with itself:
//
//   - ESPPeer: an xfrm endpoint with manual SAs and tunnel-mode policies,
//     ESP-in-UDP (RFC 4303, RFC 3948) with AES-GCM (RFC 4106) or
//     ChaCha20-Poly1305 (RFC 7634). Our machines' kernel has no ESP, so the
//     endpoint is a User-Mode Linux kernel (Debian package user-mode-linux)
//     booted on the host's root file system and wired to the namespaces by
//     TAP devices. A boot takes a few seconds: start one peer and reuse it.
//   - VXLANPeer: the host kernel's vxlan driver (RFC 7348) in a namespace,
//     with TX checksum offload off so its inner checksums are complete, as
//     a NIC would make them (see VXLANOptions.KeepTxOffload).
//
// The peers are the bash scripts in scripts/ (copies of shared/interop, where
// the wire facts they confirmed are documented). They are embedded in the
// package and written to the peer's run directory, so the package works from
// any test binary. This package starts them, parses their KEY=VALUE output and
// their status text, and tears them down.
//
// Topology of a peer attached to a test namespace A (ESP; VXLAN is the same
// without the LAN namespace, its endpoint is the namespace drv-NAME-k):
//
//	[A]  ul0 Remote ==veth== [drv-NAME: br0] ── UML (xfrm) Local ── LAN_GW ══ LAN_HOST [drv-NAME-lan]
//
// Everything is created with the prefix "drv-" (Prefix, as lab.Prefix) and removed by
// Close; Sweep removes what a killed test process left behind. The run
// directory must be visible to the UML kernel, which mounts its own tmpfs on
// /tmp and /run: it is created under /var/tmp by default.
//
// Host packages needed (CI installs them): user-mode-linux iproute2 ethtool
// perl kmod procps, plus tcpdump for captures.
package kernelpeer

// Package vxlan reads and writes the 8-byte VXLAN header of RFC 7348 §5.
//
// It owns the header only: the outer IP/UDP headers, the inner Ethernet frame
// (see router/packet), sockets and the forwarding database belong to the
// caller. Parse is a never-panicking, allocation-free view over bytes from the
// wire; Put and Append write the one header form Linux sends.
//
// Parse is as strict as the Linux vxlan driver (confirmed against the kernel,
// see shared/interop/README.md "VXLAN"), not as lenient as RFC 7348, which says
// receivers ignore reserved bits: the kernel drops a packet with any reserved
// flag bit or a non-zero reserved low byte, so drover does too and stays
// byte-compatible in both directions.
package vxlan

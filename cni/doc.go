// Package cni is drover's CNI plugin (spec 1.1, through
// github.com/containernetworking/cni's skel): the drover binary, installed
// as /opt/cni/bin/drover and started with CNI_COMMAND set, runs Main.
//
// ADD attaches a container to this host's bridge (created if missing, with
// the gateway, the first host address of the host's subnet): an address
// reserved on disk first (package ipam, from the daemon's block unless the
// config names a subnet), then a veth pair whose container end is created
// directly in the container's namespace, the address, the routes and the
// MTU (the daemon's tun_mtu unless configured), the bridge port isolated
// (the host routes container to container, so policy sees every flow), hairpin,
// an nftables masquerade rule with hostNat, and a notice to the daemon.
// Whatever fails, ADD undoes what it did for the attachment, in reverse.
// DEL removes it all and is idempotent; CHECK verifies it against
// prevResult; GC releases what the runtime no longer lists; STATUS reports
// whether an ADD could succeed now. Docs: docs/cni.md.
//
// Two network models, both from the same keys: routed (the address has the
// host subnet's length; the cluster CIDR, and with isDefaultGateway
// everything, is reached via the gateway) and flat (the address has the
// cluster CIDR's length, so the whole cluster is on-link, as Rancher's /16;
// something on the host must then answer ARP for remote addresses).
//
// Errors are CNI error objects: 2 unknown key (with its value), 3 container
// namespace gone, 4 bad environment, 5 state directory unusable, 6 not JSON
// or the wrong JSON type, 7 bad value (naming the key), 11 daemon needed but
// unreachable or without a block, or no free address, 50 STATUS not ready,
// 999 anything else.
//
// The package owns the container's side of the host: the bridge, the
// veths, the NAT rules in nftables table "ip drover", and the reservation
// directory. It does not own the TUN, the routes to other hosts or ARP
// answers for remote addresses: the daemon does. It reads the daemon's
// state only through the control socket.
package cni

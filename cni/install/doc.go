// Package install puts the drover CNI plugin where a node's container
// runtime finds it: the binary into the runtime's CNI binary directory and
// a network configuration list into its config directory, both replaced
// atomically (internal/durable), binary first. It is `drover install-cni`,
// which the Kubernetes DaemonSet's init container runs with the host's
// /opt/cni/bin and /etc/cni/net.d mounted (deploy/kubernetes, docs/cni.md).
//
// The conflist is checked with the plugin's own parser (cni.ParseConfList)
// and every plugin it chains must already be in the binary directory;
// nothing is written otherwise. Installing what is already installed
// changes nothing, not even a modification time, so a runtime that watches
// the directory sees no event. The package owns those two files only: it
// never removes other networks' configs or plugins.
package install

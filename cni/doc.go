// Package cni will own the CNI plugin (spec 1.1): bridge, veth into the
// container's namespace, IPAM from this host's block, host NAT.
package cni

// Package testenv builds network-namespace labs: an underlay, hosts with a
// bridge and containers, and a drover router per host, started as a real
// `drover run` process inside the host's namespace. Integration tests and
// `drover lab` use it alike.
//
// Everything it creates in the kernel is named with the prefix "drv-" and is
// removed when the lab closes (tests: through t.Cleanup, also on failure;
// `drover lab`: also on Ctrl-C). Sweep removes leftovers of a crashed run.
// Namespaces are configured through netlink handles bound to them, never by
// switching the calling thread, and never by shelling out to ip(8).
package testenv

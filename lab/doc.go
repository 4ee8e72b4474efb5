// Package lab builds network-namespace labs: an underlay, hosts with a
// bridge and containers, and a drover router per host, started as a real
// `drover run` process inside the host's namespace. It is the code behind
// `drover lab`, so it is part of the product: it imports nothing of
// package testing and never runs the Go toolchain. It runs the binary it
// is given (Options.Bin: `drover lab` passes its own executable, tests
// the one package lab builds). The integration tests live in this
// package's _test.go files, with the test-only harnesses (Kubernetes,
// containerd, BIRD and FRR) beside them.
//
// A lab runs in static mode (every router configured with every peer's
// prefixes and manual SAs) or, with Options.Cluster, in cluster mode:
// routers get only the cluster key and host 1 as the seed, claim their own
// blocks, and the lab addresses each host's containers from its block once
// the routers agree. Cluster labs can stop, kill, restart and cut off hosts
// (Lab.StopRouter, KillRouter, StartRouter, SetUplink), run a host's router
// as a foreign-architecture build under qemu-user (HostOptions.Arch), send
// paced sequence-numbered UDP streams (Lab.StartStream), forge inner
// sources (SendRawUDP), and capture the underlay's ESP packets to check
// that no (SA, sequence number) pair is ever sent twice (Lab.CaptureESP).
//
// For Kubernetes mode its tests run real components (docs/testing.md): StartKube
// (etcd and kube-apiserver on the test process's loopback; Kube.ServeIn
// relays the same URL into a lab namespace), StartContainerd (containerd's
// CRI inside a lab namespace, with locally built images and RunPod) and
// StartKubelet (a kubelet beside that containerd, registering a Node with
// the namespace's address). WriteBridgeConflist gives them a pod network of
// the reference plugins, to test the infrastructure without drover.
//
// Everything it creates in the kernel is named with the prefix "drv-" and is
// removed when the lab closes (tests: through t.Cleanup, also on failure;
// `drover lab`: also on Ctrl-C). Sweep removes leftovers of a crashed run.
// Namespaces are configured through netlink handles bound to them, never by
// switching the calling thread, and never by shelling out to ip(8).
package lab

// Package health decides whether the daemon is alive (/healthz) and ready
// to carry traffic (/readyz), and serves both, with the Prometheus metrics
// (/metrics), on a TCP address for kubelet probes and Prometheus.
//
// It serves nothing else. The control API (status with peers and SPIs,
// the CNI plugin's POST and DELETE /v1/local, identity forget) stays on
// the daemon's unix socket, mode 0600: a TCP port can be reached by every
// local user and, off loopback, by the network, so only what is safe for
// them to read is on it, and nothing there changes state.
//
// The package reads the daemon through a State snapshot the caller builds,
// so the decisions are tested with plain values and no daemon.
package health

// Package systemd holds drover's systemd unit (drover.service beside this
// file) and, in its tests only, its checks: systemd-analyze verify passes
// with nothing to say, the unit asks for readiness by sd_notify and no
// capability beyond NET_ADMIN, NET_RAW and NET_BIND_SERVICE, and the real
// daemon started as ExecStart says, inside the unit's confinement (bounding
// set, no_new_privs, read-only root and /proc/sys), becomes ready, routes,
// and stops cleanly on SIGTERM. Installation: docs/install.md.
//
// The package has no code: nothing here is linked into the drover binary.
package systemd

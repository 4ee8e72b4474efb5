// Package metrics renders the daemon's counters (a router.Status, with
// what the control layer fills in) in the Prometheus text exposition
// format, version 0.0.4. The control socket and the TCP listener serve
// the same text from it. It does no I/O of its own and reads no clock.
//
// Every family is written once, HELP then TYPE then its samples, and label
// values are escaped as the format wants (backslash, double quote and
// newline; invalid UTF-8 replaced): a peer named by gossip can hold any
// byte, and one bad line makes Prometheus reject the whole scrape.
package metrics

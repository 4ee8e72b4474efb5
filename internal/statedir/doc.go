// Package statedir guards drover's state directory (state_dir): Lock makes
// sure one daemon at a time uses it. Two daemons sharing it would both
// reserve ESP sequence numbers in the same records, claim one block and hold
// one identity key, so the second must not start. The package owns the lock
// file only; what else lives in the directory is its users' business.
package statedir

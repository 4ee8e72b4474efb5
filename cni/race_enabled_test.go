//go:build race

package cni

// raceEnabled: the race detector slows the test process and the machine;
// measurements skip under it.
const raceEnabled = true

//go:build race

package tun

// raceEnabled: the race detector's instrumentation allocates, so allocation
// counts are not meaningful under -race.
const raceEnabled = true

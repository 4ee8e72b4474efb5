//go:build race

package router

// raceEnabled: the race detector makes sync.Pool drop a quarter of what is
// Put, so allocation counts are not meaningful under -race.
const raceEnabled = true

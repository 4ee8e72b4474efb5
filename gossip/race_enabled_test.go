//go:build race

package gossip

// raceEnabled: under the race detector 200 members in one process are ten
// times slower and starve their own probes, so the scale test skips.
const raceEnabled = true

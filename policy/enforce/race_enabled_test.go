//go:build race

package enforce

// raceEnabled: under the race detector compilation is several times
// slower, so the timed scale test runs in .ci/run's scale step instead.
const raceEnabled = true

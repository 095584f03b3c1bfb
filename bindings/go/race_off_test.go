//go:build !race

package tidemark

// raceEnabled: the tests run under the race detector (allocation counts are not meaningful).
const raceEnabled = false

package rdssim

import (
	"strings"
	"time"
)

// faults are the test knobs. All are guarded by Simulator.mu.
type faults struct {
	latency  time.Duration
	diskFull bool
	failures []failure
}

type failure struct {
	match   string // substring of the statement text
	message string // printed RouterOS error, e.g. "failure: timeout"
	left    int    // remaining count; <0 means forever
}

func (f *faults) failFor(text string) (string, bool) {
	for i := range f.failures {
		fl := &f.failures[i]
		if fl.left != 0 && strings.Contains(text, fl.match) {
			if fl.left > 0 {
				fl.left--
			}
			return fl.message, true
		}
	}
	return "", false
}

// SetLatency adds d before every command's answer (0 disables).
func (s *Simulator) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = d
}

func (s *Simulator) latency() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.latency
}

// SetDiskFull makes every create and grow fail with "not enough space".
func (s *Simulator) SetDiskFull(full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.diskFull = full
}

// FailCommands makes the next count statements whose text contains match
// print message instead of running (count < 0: until ClearFaults). The
// message is printed on stdout with exit status 0, as RouterOS does.
func (s *Simulator) FailCommands(match, message string, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.failures = append(s.faults.failures, failure{match: match, message: message, left: count})
}

// ClearFaults removes latency, disk-full and command failures.
func (s *Simulator) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faults{}
}

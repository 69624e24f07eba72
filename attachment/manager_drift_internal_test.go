package attachment

import "testing"

// A zero DriftChecker reports its first drift once, whatever its kind (it
// panicked when a conflicting holder was the first report: found by running
// the controller with a VolumeAttachment it was not allowed to delete).
func TestDriftCheckerZeroValueReports(t *testing.T) {
	var dc DriftChecker
	if !dc.report("vol/conflicting-holder") || dc.report("vol/conflicting-holder") {
		t.Fatal("want the first report only")
	}
}

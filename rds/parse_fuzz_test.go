package rds_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/rds-fence/rds-fence/rds"
)

// FuzzParseDetail checks that ParseDetail never panics, that every error
// wraps one of the package sentinels, and that every record keeps Keys and
// Props in step.
func FuzzParseDetail(f *testing.F) {
	f.Add(pdCRLF(pdLegend + pdPVCEntry + pdPoolEntry))
	f.Add(pdLegend + pdPVCEntry)
	f.Add(strings.Join(pdTrimLines(pdLegend+pdPVCEntry), "\n"))
	f.Add(pdBuildListing(3))
	for _, tc := range pdCases {
		f.Add(tc.in)
	}
	sentinels := []error{rds.ErrUnexpectedOutput, rds.ErrNotFound, rds.ErrAlreadyExists,
		rds.ErrOutOfSpace, rds.ErrInvalidArgument, rds.ErrCommandFailed}
	f.Fuzz(func(t *testing.T, out string) {
		recs, err := rds.ParseDetail(out)
		if err != nil {
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		for _, r := range recs {
			if len(r.Keys) != len(r.Props) {
				t.Fatalf("len(Keys)=%d len(Props)=%d: %+v", len(r.Keys), len(r.Props), r)
			}
			for _, k := range r.Keys {
				if _, ok := r.Props[k]; !ok {
					t.Fatalf("key %q not in Props: %+v", k, r)
				}
			}
		}
	})
}

// FuzzParseSize checks that ParseSize never panics, never returns a
// negative size, wraps ErrUnexpectedOutput on failure and reads plain
// decimal numbers exactly.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1073741824", "1 073 741 824", "50.0GiB", "512.0MiB", "1.5TiB", "100KiB",
		"3B", "10G", "10M", "10K", "10T", "-1", "", "9223372036854775808", "7.9EiB", "0.0005KiB", "1..5G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := rds.ParseSize(s)
		if err != nil {
			if !errors.Is(err, rds.ErrUnexpectedOutput) {
				t.Fatalf("ParseSize(%q) error %v does not wrap ErrUnexpectedOutput", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if v, perr := strconv.ParseInt(strings.TrimSpace(s), 10, 64); perr == nil && v >= 0 && v != n {
			t.Fatalf("ParseSize(%q) = %d, want %d", s, n, v)
		}
	})
}

package rds

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

var pdUnits = map[string]int64{
	"B": 1,
	"K": 1 << 10, "KiB": 1 << 10,
	"M": 1 << 20, "MiB": 1 << 20,
	"G": 1 << 30, "GiB": 1 << 30,
	"T": 1 << 40, "TiB": 1 << 40,
	"P": 1 << 50, "PiB": 1 << 50,
	"E": 1 << 60, "EiB": 1 << 60,
}

// ParseSize parses a RouterOS size: plain bytes "1073741824", space-grouped
// "1 073 741 824", or human "50.0GiB", "512.0MiB", "1.5TiB", "100KiB", "3B",
// also "10G"/"10M"/"10K"/"10T" (binary multiples; P/PiB and E/EiB too).
// Human values with a fraction are rounded to the nearest byte (half up).
// Anything else, a negative value or an int64 overflow yields an error
// wrapping ErrUnexpectedOutput.
func ParseSize(s string) (int64, error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("%w: invalid size %q", ErrUnexpectedOutput, pdClip(s))
	}
	t := strings.TrimSpace(s)
	if t == "" || len(t) > 64 {
		return bad()
	}
	i := 0
	for i < len(t) && (pdIsDigit(t[i]) || t[i] == ' ' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], t[i:]
	if unit == "" {
		digits, ok := pdUngroup(num)
		if !ok {
			return bad()
		}
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return bad()
		}
		return v, nil
	}
	mult, ok := pdUnits[unit]
	ip, fp, dot := strings.Cut(num, ".")
	if !ok || !pdAllDigits(ip) || (dot && !pdAllDigits(fp)) {
		return bad()
	}
	v, _ := new(big.Int).SetString(ip+fp, 10)
	v.Mul(v, big.NewInt(mult))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(fp))), nil)
	q, r := new(big.Int).QuoRem(v, den, new(big.Int))
	if r.Lsh(r, 1).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return bad()
	}
	return q.Int64(), nil
}

// pdUngroup accepts "1073741824" or "1 073 741 824" and returns the digits.
func pdUngroup(num string) (string, bool) {
	if !strings.Contains(num, " ") {
		return num, pdAllDigits(num)
	}
	groups := strings.Split(num, " ")
	if len(groups[0]) > 3 || !pdAllDigits(groups[0]) {
		return "", false
	}
	for _, g := range groups[1:] {
		if len(g) != 3 || !pdAllDigits(g) {
			return "", false
		}
	}
	return strings.Join(groups, ""), true
}

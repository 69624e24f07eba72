package rdssim

import (
	"fmt"
	"strconv"
	"strings"
)

// FieldStyle says how a value is printed.
type FieldStyle int

const (
	Plain   FieldStyle = iota // printed as is: fs=- type=file file-path=/a/b.img file-size=50.0GiB
	Quoted                    // printed in double quotes with RouterOS escapes: slot="pvc-1"
	Grouped                   // a decimal integer printed in groups of three: size=53 687 091 200
)

// Field is one property of an entry.
type Field struct {
	Key, Value string
	Style      FieldStyle
}

// Entry is one item of a `print detail` listing. Index must not be negative.
type Entry struct {
	Index   int
	Flags   string // flag letters, e.g. "BM"; "" for none
	Comment string // printed as a ";;; " line when not empty
	Fields  []Field
}

// DefaultWidth is the terminal width RouterOS wraps at over a non-interactive SSH exec.
const DefaultWidth = 80

// DiskLegend is the disk Flags legend text.
const DiskLegend = "Flags: X - disabled; E - empty; B - block-device; M - mounted; F - formatting; r - raid-member; e - encrypted; t - nvme-tcp-exported; i - iscsi-exported; s - smb-shared; n - nfs-shared; m - media-shared"

// FormatDetail renders entries like `/disk print detail`, with DiskLegend.
// See FormatDetailLegend.
func FormatDetail(entries []Entry, width int) string {
	return FormatDetailLegend(DiskLegend, entries, width)
}

// FormatDetailLegend renders entries like `print detail` at a terminal
// width (DefaultWidth when width <= 0): the legend (none when legend is ""),
// wrapped between words with continuation lines at column 0, then each
// entry: the index right-aligned to the width of the largest index (at least
// 2), one space, the flags left-aligned in a field 2 wide (wider if an entry
// has more flags), one space, then the comment line (";;; text") if any and
// the fields separated by single spaces. A token that would pass the width
// moves to the next line when it fits there, leaving the trailing space on
// the previous line; a token longer than a whole line is broken mid-token,
// filling the line to width-1. Continuation lines are indented to the
// content column. Every line ends in "\r\n"; an empty line follows each
// entry. With no entries only the legend is printed.
func FormatDetailLegend(legend string, entries []Entry, width int) string {
	if width <= 0 {
		width = DefaultWidth
	}
	var b strings.Builder
	if legend != "" {
		col := 0
		for _, w := range strings.Fields(legend) {
			if col > 0 && col+len(w)+1 > width {
				b.WriteString("\r\n")
				col = 0
			}
			b.WriteString(w)
			b.WriteByte(' ')
			col += len(w) + 1
		}
		b.WriteString("\r\n")
	}
	idxW, flagW := 2, 2
	for _, e := range entries {
		idxW = max(idxW, len(strconv.Itoa(e.Index)))
		flagW = max(flagW, len(e.Flags))
	}
	indent := idxW + 1 + flagW + 1
	for _, e := range entries {
		fmt.Fprintf(&b, "%*d %-*s ", idxW, e.Index, flagW, e.Flags)
		w := fmtdWriter{b: &b, width: width, indent: indent, col: indent}
		if e.Comment != "" {
			w.word(";;;")
			for _, cw := range strings.Fields(e.Comment) {
				w.word(cw)
			}
			if len(e.Fields) > 0 {
				w.newline()
			}
		}
		for _, f := range e.Fields {
			switch {
			case f.Style == Quoted:
				w.word(f.Key + `="` + fmtdEscape(f.Value) + `"`)
			case f.Style == Grouped && fmtdAllDigits(f.Value):
				groups := fmtdGroups(f.Value)
				w.word(f.Key + "=" + groups[0])
				for _, g := range groups[1:] {
					w.word(g)
				}
			default:
				w.word(f.Key + "=" + f.Value)
			}
		}
		b.WriteString("\r\n\r\n")
	}
	return b.String()
}

// FormatError renders a RouterOS error message line ("failure: not enough space") with CRLF.
func FormatError(msg string) string {
	return strings.TrimRight(msg, "\r\n") + "\r\n"
}

// HumanSize renders bytes like RouterOS' file-size column: one decimal and
// the largest binary unit that keeps the value >= 1: 53687091200 ->
// "50.0GiB", 1536 -> "1.5KiB", 512 -> "512B". Negative values get a "-".
func HumanSize(n int64) string {
	if n < 0 {
		u := uint64(-(n + 1)) + 1 // no overflow for MinInt64
		return "-" + fmtdHuman(u)
	}
	return fmtdHuman(uint64(n))
}

func fmtdHuman(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	units := [...]string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	u := 0
	for u+1 < len(units) && n>>(10*(u+2)) > 0 {
		u++
	}
	v := float64(n) / float64(uint64(1)<<(10*(u+1)))
	return strconv.FormatFloat(v, 'f', 1, 64) + units[u]
}

// fmtdWriter wraps the words of one entry.
type fmtdWriter struct {
	b                  *strings.Builder
	width, indent, col int
}

func (w *fmtdWriter) newline() {
	w.b.WriteString("\r\n")
	w.b.WriteString(strings.Repeat(" ", w.indent))
	w.col = w.indent
}

// word writes s and a separating space, wrapping as RouterOS does.
func (w *fmtdWriter) word(s string) {
	need := len(s) + 1
	if w.col+need > w.width && w.col > w.indent && w.indent+need <= w.width {
		w.newline() // between tokens: the previous line keeps its trailing space
	}
	for w.col+len(s)+1 > w.width { // longer than a line: break mid-token
		room := w.width - 1 - w.col
		if room < 1 {
			if w.col > w.indent {
				w.newline()
				continue
			}
			room = 1 // absurdly narrow width: still make progress
		}
		if room >= len(s) {
			break
		}
		w.b.WriteString(s[:room])
		s = s[room:]
		w.newline()
	}
	w.b.WriteString(s)
	w.b.WriteByte(' ')
	w.col += len(s) + 1
}

// fmtdEscape escapes a value for printing inside double quotes.
func fmtdEscape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '"', '\\', '$', '?':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\v':
			b.WriteString(`\v`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&b, `\%02X`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// fmtdGroups splits a digit string into groups of three from the right.
func fmtdGroups(v string) []string {
	head := len(v) % 3
	if head == 0 {
		head = 3
	}
	groups := []string{v[:head]}
	for i := head; i < len(v); i += 3 {
		groups = append(groups, v[i:i+3])
	}
	return groups
}

func fmtdAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

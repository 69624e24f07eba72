package rds

import (
	"fmt"
	"strconv"
	"strings"
)

// Record is one entry of a `print detail` listing.
type Record struct {
	Index   int               // RouterOS print index; -1 if absent
	Flags   string            // flag letters printed after the index, e.g. "BM", "X", ""
	Comment string            // text of a ";;; comment" line belonging to the entry, if any
	Keys    []string          // property names in printed order (each once)
	Props   map[string]string // property values, unquoted and unescaped; space-grouped numbers joined ("53 687 091 200" -> "53687091200")
}

// Get returns the value of key and whether the entry has it.
func (r Record) Get(key string) (string, bool) {
	v, ok := r.Props[key]
	return v, ok
}

// ParseDetail parses the stdout of a `print detail` command. It first checks
// ClassifyOutput and returns that error if the output is an error message.
//
// It accepts CRLF or LF line ends, a (wrapped) Flags legend, Columns
// headers, blank lines, entries wrapped over indented continuation lines
// (between tokens or mid-token), ";;;" comments, quoted values with RouterOS
// escapes and space-grouped numbers. Text it cannot read yields an error
// wrapping ErrUnexpectedOutput that names the line. Output with a legend and
// no entries yields zero records and no error. It never panics.
func ParseDetail(out string) ([]Record, error) {
	if err := ClassifyOutput(out); err != nil {
		return nil, err
	}
	p := pdParser{trimmed: !pdHasTrailingSpace(out)}
	rest, lineNo := out, 0
	for rest != "" {
		var line string
		if i := strings.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, ""
		}
		lineNo++
		for len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if strings.IndexByte(line, '\r') >= 0 { // stray carriage returns
			line = strings.ReplaceAll(line, "\r", "")
		}
		if err := p.line(line, lineNo); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return p.recs, nil
}

// pdSeg maps an offset of the joined entry text to its source line.
type pdSeg struct{ off, line int }

// pdParser holds the state of one ParseDetail run.
type pdParser struct {
	// trimmed is set when no line ends in whitespace: trailing spaces were
	// stripped, so a missing trailing space no longer proves a mid-token wrap.
	trimmed  bool
	inLegend bool
	recs     []Record

	// The entry in progress.
	active      bool
	index       int
	flags       string
	comment     string
	inComment   bool // the last line read belonged to the comment
	commentWS   bool // that comment line ended with whitespace
	indexEnd    int  // column after the index digits
	contentCol  int  // column where the entry's first key starts
	provisional bool // contentCol is a guess until the first continuation line
	buf         []byte
	segs        []pdSeg
	keyArena    []string // backing store for Record.Keys

	// Incremental scan of buf: quote state and start of the last token.
	scanPos, tokStart int
	inQuote, escaped  bool
}

func (p *pdParser) line(line string, n int) error {
	ind := 0
	for ind < len(line) && pdIsSpace(line[ind]) {
		ind++
	}
	if ind == len(line) {
		p.inLegend = false
		return nil
	}
	body := line[ind:]
	if ind == 0 && (strings.HasPrefix(body, "Flags:") || strings.HasPrefix(body, "Columns:")) {
		if err := p.finish(); err != nil {
			return err
		}
		p.inLegend = body[0] == 'F'
		return nil
	}
	if pdIsDigit(body[0]) && (!p.active || ind < p.contentCol) {
		if err := p.finish(); err != nil {
			return err
		}
		p.inLegend = false
		return p.startEntry(line, ind, n)
	}
	if p.active {
		if ind == 0 {
			if err := pdClassifyLine(body, body); err != nil {
				return err
			}
		}
		return p.continuation(line, ind, n)
	}
	if pdStartsWithKeyEq(body) { // an entry printed without an index
		p.inLegend = false
		p.begin(-1)
		p.indexEnd, p.contentCol = ind, ind
		p.appendText(body, n)
		return nil
	}
	if err := pdClassifyLine(body, body); err != nil {
		return err
	}
	if p.inLegend { // legend continuation line
		return nil
	}
	return fmt.Errorf("%w: line %d: unexpected text %q", ErrUnexpectedOutput, n, pdClip(body))
}

func (p *pdParser) begin(index int) {
	p.active, p.index, p.flags, p.comment = true, index, "", ""
	p.inComment, p.commentWS, p.provisional = false, false, false
	p.buf, p.segs = p.buf[:0], p.segs[:0]
	p.scanPos, p.tokStart, p.inQuote, p.escaped = 0, 0, false, false
}

// startEntry reads an entry's first line: index, optional flags, then a
// comment or the first properties.
func (p *pdParser) startEntry(line string, ind, n int) error {
	j := ind
	for j < len(line) && pdIsDigit(line[j]) {
		j++
	}
	if j-ind > 9 {
		return fmt.Errorf("%w: line %d: index too large %q", ErrUnexpectedOutput, n, pdClip(line))
	}
	if j < len(line) && !pdIsSpace(line[j]) {
		return fmt.Errorf("%w: line %d: malformed entry line %q", ErrUnexpectedOutput, n, pdClip(line))
	}
	idx, _ := strconv.Atoi(line[ind:j])
	p.begin(idx)
	p.indexEnd, p.contentCol, p.provisional = j, j+1, true
	k := pdSkipSpace(line, j)
	if k == len(line) {
		return nil
	}
	if !strings.HasPrefix(line[k:], ";;;") {
		e := k
		for e < len(line) && pdIsFlag(line[e]) {
			e++
		}
		if e > k && e-k <= 16 && ((e < len(line) && pdIsSpace(line[e])) || (e == len(line) && p.trimmed)) {
			p.flags = line[k:e]
			if k = pdSkipSpace(line, e); k == len(line) {
				return nil
			}
		}
	}
	if strings.HasPrefix(line[k:], ";;;") {
		p.addComment(line[k+3:])
		return nil
	}
	p.contentCol, p.provisional = k, false
	p.appendText(line[k:], n)
	return nil
}

// continuation appends an indented continuation line to the entry.
func (p *pdParser) continuation(line string, ind, n int) error {
	if p.provisional {
		if ind > p.indexEnd {
			p.contentCol = ind
		}
		p.provisional = false
	}
	text := line[min(ind, p.contentCol):]
	if len(text) > 0 && pdIsSpace(text[0]) {
		// Indented deeper than the content column: keep the spaces only
		// when they continue a quoted value wrapped mid-token.
		p.sync()
		if !p.inQuote || len(p.buf) == 0 {
			text = strings.TrimLeft(text, " \t")
		}
	}
	if len(p.buf) == 0 && strings.HasPrefix(text, ";;;") {
		p.comment, p.commentWS = "", false
		p.addComment(text[3:])
		return nil
	}
	if p.inComment {
		if !pdStartsWithKeyEq(text) { // the comment itself wrapped
			p.addComment(text)
			return nil
		}
		p.inComment = false
	}
	if m := len(p.buf); m > 0 && !pdIsSpace(p.buf[m-1]) && p.trimmed && p.needSpace(text) {
		p.buf = append(p.buf, ' ')
	}
	p.appendText(text, n)
	return nil
}

func (p *pdParser) addComment(text string) {
	t := strings.TrimSpace(text)
	if p.comment != "" && t != "" && (p.commentWS || p.trimmed) {
		p.comment += " "
	}
	p.comment += t
	p.commentWS = len(text) > 0 && pdIsSpace(text[len(text)-1])
	p.inComment = true
}

func (p *pdParser) appendText(text string, n int) {
	p.segs = append(p.segs, pdSeg{len(p.buf), n})
	p.buf = append(p.buf, text...)
}

// sync brings the quote state and last-token start up to date with buf.
func (p *pdParser) sync() {
	for i := p.scanPos; i < len(p.buf); i++ {
		c := p.buf[i]
		switch {
		case p.escaped:
			p.escaped = false
		case p.inQuote:
			if c == '\\' {
				p.escaped = true
			} else if c == '"' {
				p.inQuote = false
			}
		case c == '"' && i > 0 && p.buf[i-1] == '=':
			p.inQuote = true
		case pdIsSpace(c):
			p.tokStart = i + 1
		}
	}
	p.scanPos = len(p.buf)
}

// needSpace guesses, when trailing spaces were trimmed, whether the previous
// line ended between tokens (true) or mid-token (false).
func (p *pdParser) needSpace(text string) bool {
	p.sync()
	if p.inQuote {
		return false
	}
	first := text
	if i := strings.IndexAny(text, " \t"); i >= 0 {
		first = text[:i]
	}
	prev := string(p.buf[p.tokStart:])
	prevVal := prev
	_, after, prevHasEq := strings.Cut(prev, "=")
	if prevHasEq {
		prevVal = after
	}
	switch {
	case len(first) == 3 && pdAllDigits(first):
		return pdAllDigits(prevVal) // next group of a grouped number
	case pdIsTime(first):
		return pdIsDate(prevVal)
	case pdStartsWithKeyEq(first):
		return (prevHasEq && pdStartsWithKeyEq(prev)) || pdAllDigits(prev)
	}
	return false
}

// finish tokenises the entry in progress into a Record.
func (p *pdParser) finish() error {
	if !p.active {
		return nil
	}
	p.active = false
	rec := Record{Index: p.index, Flags: p.flags, Comment: p.comment}
	if err := p.tokenize(&rec); err != nil {
		return err
	}
	p.recs = append(p.recs, rec)
	return nil
}

func (p *pdParser) tokenize(rec *Record) error {
	s := string(p.buf)
	est := strings.Count(s, "=")
	// Keys come from a shared chunk: every key is followed by a '=', so est
	// bounds len(Keys) and the full slice expression keeps records apart.
	if len(p.keyArena) < est {
		p.keyArena = make([]string, max(est, 2048))
	}
	rec.Keys, p.keyArena = p.keyArena[:0:est], p.keyArena[est:]
	rec.Props = make(map[string]string, est)
	n, i := len(s), 0
	for {
		i = pdSkipSpace(s, i)
		if i >= n {
			return nil
		}
		start := i
		if !pdIsKeyStart(s[i]) {
			return p.tokErr(s, start, "expected key=value")
		}
		for i++; i < n && pdIsKeyChar(s[i]); i++ {
		}
		if i >= n || s[i] != '=' {
			return p.tokErr(s, start, "expected key=value")
		}
		key := s[start:i]
		i++
		var val string
		if i < n && s[i] == '"' {
			i++
			vs, esc := i, false
			for i < n && s[i] != '"' {
				if s[i] == '\\' {
					esc = true
					i++
				}
				i++
			}
			if i >= n {
				return p.tokErr(s, start, "unterminated quoted value")
			}
			val = s[vs:i]
			if i++; i < n && !pdIsSpace(s[i]) {
				return p.tokErr(s, start, "text after closing quote")
			}
			if esc {
				val = pdUnescape(val)
			}
		} else {
			vs := i
			for i < n && !pdIsSpace(s[i]) {
				i++
			}
			val = s[vs:i]
			if pdAllDigits(val) {
				val, i = pdAbsorbGroups(s, val, i)
			} else if pdIsDate(val) { // /file last-modified=2024-01-25 10:12:03
				if j := pdSkipSpace(s, i); j > i && j+8 <= n && pdIsTime(s[j:j+8]) && (j+8 == n || pdIsSpace(s[j+8])) {
					val, i = val+" "+s[j:j+8], j+8
				}
			}
		}
		before := len(rec.Props)
		rec.Props[key] = val
		if len(rec.Props) > before {
			rec.Keys = append(rec.Keys, key)
		}
	}
}

func (p *pdParser) tokErr(s string, off int, msg string) error {
	line := 0
	for _, sg := range p.segs {
		if sg.off > off {
			break
		}
		line = sg.line
	}
	return fmt.Errorf("%w: line %d: %s near %q", ErrUnexpectedOutput, line, msg, pdClip(s[off:]))
}

// pdAbsorbGroups joins the space-separated three-digit groups that follow
// the digits first (ending at s[i]) and returns the joined value and the
// offset after the last group.
func pdAbsorbGroups(s, first string, i int) (string, int) {
	j := i
	for {
		k := pdSkipSpace(s, j)
		if k == j || k+3 > len(s) || !pdAllDigits(s[k:k+3]) || (k+3 < len(s) && !pdIsSpace(s[k+3])) {
			break
		}
		j = k + 3
	}
	if j == i {
		return first, i
	}
	var b strings.Builder
	b.Grow(len(first) + j - i)
	b.WriteString(first)
	for x := i; x < j; x++ {
		if pdIsDigit(s[x]) {
			b.WriteByte(s[x])
		}
	}
	return b.String(), j
}

// pdUnescape resolves RouterOS escapes inside a quoted value: \" \\ \$ \?
// \_ (space), \n \r \t \a \b \f \v and \HH (two hex digits). An unknown
// escape is kept as written.
func pdUnescape(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' || i+1 >= len(v) {
			b.WriteByte(c)
			continue
		}
		i++
		c = v[i]
		// Upper-case hex wins over the one-letter escapes (\AB is 0xAB,
		// \ab is BEL then 'b'): RouterOS prints hex escapes in upper case.
		if i+1 < len(v) && pdIsUpperHex(c) && pdIsUpperHex(v[i+1]) {
			b.WriteByte(pdHexVal(c)<<4 | pdHexVal(v[i+1]))
			i++
			continue
		}
		switch c {
		case '"', '\\', '$', '?':
			b.WriteByte(c)
		case '_':
			b.WriteByte(' ')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		default:
			if i+1 < len(v) && pdHexVal(c) != 0xff && pdHexVal(v[i+1]) != 0xff {
				b.WriteByte(pdHexVal(c)<<4 | pdHexVal(v[i+1]))
				i++
			} else {
				b.WriteByte('\\')
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// pdHasTrailingSpace reports whether any non-blank line ends in whitespace.
func pdHasTrailingSpace(s string) bool {
	for s != "" {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		line = strings.TrimRight(line, "\r")
		if n := len(line); n > 0 && pdIsSpace(line[n-1]) && strings.TrimSpace(line) != "" {
			return true
		}
	}
	return false
}

// pdStartsWithKeyEq reports whether s begins with `key=`.
func pdStartsWithKeyEq(s string) bool {
	if s == "" || !pdIsKeyStart(s[0]) {
		return false
	}
	i := 1
	for i < len(s) && pdIsKeyChar(s[i]) {
		i++
	}
	return i < len(s) && s[i] == '='
}

// pdIsDate matches 2024-01-25 and jan/25/2024.
func pdIsDate(s string) bool {
	switch len(s) {
	case 10:
		return pdAllDigits(s[0:4]) && s[4] == '-' && pdAllDigits(s[5:7]) && s[7] == '-' && pdAllDigits(s[8:10])
	case 11:
		return pdIsLower(s[0]) && pdIsLower(s[1]) && pdIsLower(s[2]) && s[3] == '/' &&
			pdAllDigits(s[4:6]) && s[6] == '/' && pdAllDigits(s[7:11])
	}
	return false
}

// pdIsTime matches 10:12:03.
func pdIsTime(s string) bool {
	return len(s) == 8 && pdAllDigits(s[0:2]) && s[2] == ':' && pdAllDigits(s[3:5]) && s[5] == ':' && pdAllDigits(s[6:8])
}

func pdClip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func pdSkipSpace(s string, i int) int {
	for i < len(s) && pdIsSpace(s[i]) {
		i++
	}
	return i
}

func pdSkipDigits(s string, i int) int {
	for i < len(s) && pdIsDigit(s[i]) {
		i++
	}
	return i
}

// pdAllDigits reports whether s is a non-empty run of decimal digits.
func pdAllDigits(s string) bool {
	return s != "" && pdSkipDigits(s, 0) == len(s)
}

func pdHexVal(c byte) byte {
	switch {
	case pdIsDigit(c):
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

func pdIsUpperHex(c byte) bool { return pdIsDigit(c) || ('A' <= c && c <= 'F') }
func pdIsSpace(c byte) bool    { return c == ' ' || c == '\t' }
func pdIsDigit(c byte) bool    { return '0' <= c && c <= '9' }
func pdIsLower(c byte) bool    { return 'a' <= c && c <= 'z' }
func pdIsKeyStart(c byte) bool { return pdIsLower(c) }
func pdIsKeyChar(c byte) bool {
	return pdIsLower(c) || pdIsDigit(c) || c == '-' || c == '.' || c == '_'
}
func pdIsFlag(c byte) bool { return pdIsLower(c) || ('A' <= c && c <= 'Z') || c == '*' }

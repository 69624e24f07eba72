package rdssim

import (
	"fmt"
	"strconv"
	"strings"
)

// The simulator reads command lines with RouterOS' own grammar, including
// the parts that make injection possible: ';' and newlines separate
// commands, '[...]' is a command substitution and '$name' a variable. A
// client that quotes correctly never triggers them; a client that does not
// is caught by tests because the simulator really runs the second command.

// arg is one argument of a statement: a bare word ("add", "detail"), a
// key=value / key~value pair, or a bracketed sub-command.
type arg struct {
	key   string // "" for a bare word or a bracket
	op    byte   // '=' or '~' for pairs
	value string // unquoted value or bare word
	sub   []arg  // for values or words given as [ ... ]
	isSub bool
}

// statement is one command: its path words and its arguments.
type statement struct {
	path []string // e.g. ["/disk", "add"] normalised to "/disk add"
	args []arg
	text string
}

func (s statement) verb() string { return strings.Join(s.path, " ") }

// syntaxError mimics RouterOS: "syntax error (line 1 column 7)".
type syntaxError struct{ col int }

func (e syntaxError) Error() string { return fmt.Sprintf("syntax error (line 1 column %d)", e.col+1) }

// parseLine splits a command line into statements.
func parseLine(line string) ([]statement, error) {
	p := &lexer{s: line}
	var out []statement
	for {
		p.skipSpace()
		if p.eof() {
			return out, nil
		}
		if c := p.peek(); c == ';' || c == '\n' || c == '\r' {
			p.i++
			continue
		}
		start := p.i
		args, err := p.args(false)
		if err != nil {
			return nil, err
		}
		st, err := toStatement(args, strings.TrimSpace(line[start:p.i]))
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
}

func toStatement(args []arg, text string) (statement, error) {
	st := statement{text: text}
	i := 0
	for ; i < len(args) && args[i].key == "" && !args[i].isSub && isPathWord(args[i].value); i++ {
		for _, w := range strings.Split(args[i].value, "/") {
			if w != "" {
				st.path = append(st.path, w)
			}
		}
	}
	if len(st.path) == 0 || !strings.HasPrefix(args[0].value, "/") {
		return st, fmt.Errorf("bad command name %s (line 1 column 1)", firstWord(text))
	}
	st.path[0] = "/" + st.path[0]
	st.args = args[i:]
	return st, nil
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

// isPathWord reports whether a bare word continues the menu path.
func isPathWord(w string) bool {
	switch w {
	case "detail", "where", "without-paging", "terse", "value-list", "as-value":
		return false
	}
	return w != "" && !strings.ContainsAny(w, "=~\"")
}

type lexer struct {
	s string
	i int
}

func (p *lexer) eof() bool  { return p.i >= len(p.s) }
func (p *lexer) peek() byte { return p.s[p.i] }
func (p *lexer) skipSpace() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// args reads arguments up to the end of the statement (';', newline, or
// ']' when inBracket).
func (p *lexer) args(inBracket bool) ([]arg, error) {
	var out []arg
	for {
		p.skipSpace()
		if p.eof() {
			if inBracket {
				return nil, syntaxError{p.i}
			}
			return out, nil
		}
		switch c := p.peek(); {
		case c == ']':
			if !inBracket {
				return nil, syntaxError{p.i}
			}
			p.i++
			return out, nil
		case c == ';' || c == '\n' || c == '\r':
			if inBracket {
				return nil, syntaxError{p.i}
			}
			return out, nil
		case c == '[':
			sub, err := p.bracket()
			if err != nil {
				return nil, err
			}
			out = append(out, arg{sub: sub, isSub: true})
		default:
			a, err := p.word()
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
}

func (p *lexer) bracket() ([]arg, error) {
	p.i++ // '['
	return p.args(true)
}

// word reads a bare word or key=value / key~value.
func (p *lexer) word() (arg, error) {
	start := p.i
	for !p.eof() {
		c := p.peek()
		if c == '=' || c == '~' {
			key := p.s[start:p.i]
			if key == "" {
				return arg{}, syntaxError{p.i}
			}
			op := c
			p.i++
			a, err := p.value()
			if err != nil {
				return arg{}, err
			}
			a.key, a.op = key, op
			return a, nil
		}
		if c == ' ' || c == '\t' || c == ';' || c == '\n' || c == '\r' || c == ']' {
			break
		}
		if c == '"' || c == '[' || c == '$' {
			return arg{}, syntaxError{p.i}
		}
		p.i++
	}
	return arg{value: p.s[start:p.i]}, nil
}

// value reads a quoted string, a [bracket], or a bare value.
func (p *lexer) value() (arg, error) {
	if p.eof() {
		return arg{}, nil
	}
	switch p.peek() {
	case '"':
		s, err := p.quoted()
		return arg{value: s}, err
	case '[':
		sub, err := p.bracket()
		return arg{sub: sub, isSub: true}, err
	case '$':
		return arg{}, fmt.Errorf("variable expansion is not supported by the simulator (column %d)", p.i+1)
	}
	start := p.i
	for !p.eof() {
		c := p.peek()
		if c == ' ' || c == '\t' || c == ';' || c == '\n' || c == '\r' || c == ']' {
			break
		}
		if c == '"' || c == '[' || c == '$' {
			return arg{}, syntaxError{p.i}
		}
		p.i++
	}
	return arg{value: p.s[start:p.i]}, nil
}

// quoted reads a RouterOS double-quoted string with its escapes.
func (p *lexer) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		p.i++
		switch c {
		case '"':
			return b.String(), nil
		case '$', '[':
			// Inside quotes RouterOS still expands $var and $[cmd]; a
			// correctly quoting client always escapes '$'.
			if c == '$' {
				return "", fmt.Errorf("variable expansion is not supported by the simulator (column %d)", p.i)
			}
			b.WriteByte(c)
		case '\\':
			if p.eof() {
				return "", syntaxError{p.i}
			}
			e := p.peek()
			p.i++
			switch e {
			case '"', '\\', '$', '?':
				b.WriteByte(e)
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
				if p.i+1 > len(p.s) {
					return "", syntaxError{p.i}
				}
				n, err := strconv.ParseUint(p.s[p.i-1:p.i+1], 16, 8)
				if err != nil {
					return "", syntaxError{p.i}
				}
				p.i++
				b.WriteByte(byte(n))
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", syntaxError{p.i}
}

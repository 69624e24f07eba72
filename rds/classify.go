package rds

import "strings"

// ClassifyOutput inspects command output (stdout+stderr joined) for a
// RouterOS error message and returns a *CommandError (Command left empty)
// wrapping ErrOutOfSpace, ErrNotFound, ErrAlreadyExists, ErrInvalidArgument
// or ErrCommandFailed, or nil when the output is not an error. The first
// non-empty line decides (case-insensitive); output that begins with a
// Flags/Columns header or an entry line is never an error.
func ClassifyOutput(out string) error {
	var line string
	for rest := out; rest != "" && line == ""; {
		if i := strings.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, ""
		}
		line = strings.TrimSpace(strings.ReplaceAll(line, "\r", ""))
	}
	if line == "" || strings.HasPrefix(line, "Flags:") || strings.HasPrefix(line, "Columns:") ||
		pdStartsWithKeyEq(line) {
		return nil
	}
	if j := pdSkipDigits(line, 0); j > 0 && (j == len(line) || pdIsSpace(line[j])) {
		return nil // an entry line
	}
	return pdClassifyLine(line, out)
}

// pdClassifyLine classifies one line; output is what the error reports.
func pdClassifyLine(line, output string) error {
	l := strings.ToLower(strings.TrimSpace(line))
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	var kind error
	switch {
	case has("not enough space", "no space left", "disk full"):
		kind = ErrOutOfSpace
	case has("syntax error", "expected end of command", "bad command name", "unknown parameter"):
		// The command itself is wrong: a client bug or a RouterOS version
		// this client does not know. Not the caller's input: never
		// ErrInvalidArgument.
		kind = ErrCommandFailed
	case has("input does not match any value", "invalid value", "missing value", "ambiguous value") ||
		(has("value of") && has("out of range")):
		kind = ErrInvalidArgument
	case has("no such item", "no such file", "not found"):
		kind = ErrNotFound
	case has("already exists", "already have", "slot already used", "file exists"):
		kind = ErrAlreadyExists
	case strings.HasPrefix(l, "failure:") || strings.HasPrefix(l, "error:"):
		kind = ErrCommandFailed
	default:
		return nil
	}
	msg := strings.TrimSpace(strings.ReplaceAll(output, "\r", ""))
	if len(msg) > 1024 {
		msg = msg[:1024] + "..."
	}
	return &CommandError{Kind: kind, Output: msg}
}

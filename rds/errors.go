package rds

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (test with errors.Is), so callers can map them to their own codes
// without parsing messages.
var (
	// ErrNotFound: the disk, file or slot does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a disk with that slot (or its backing file) exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrOutOfSpace: the storage pool cannot hold the requested size.
	ErrOutOfSpace = errors.New("out of space")
	// ErrInvalidArgument: a value was rejected by validation before it was
	// sent, or RouterOS rejected the command's syntax or a value.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnreachable: the RDS could not be reached, authenticated, or the
	// command did not complete in time. The command may or may not have run.
	ErrUnreachable = errors.New("rds unreachable")
	// ErrCommandFailed: RouterOS reported a failure this package does not
	// classify more precisely.
	ErrCommandFailed = errors.New("command failed")
	// ErrUnexpectedOutput: the output could not be parsed.
	ErrUnexpectedOutput = errors.New("unexpected output")
)

// CommandError carries the RouterOS output that caused an error, next to the
// sentinel it was classified as.
type CommandError struct {
	Kind    error  // one of the sentinels above
	Command string // the command verb, e.g. "/disk add" (never the full line)
	Output  string // RouterOS' own message, trimmed
}

func (e *CommandError) Error() string {
	if e.Command == "" {
		return fmt.Sprintf("%v: %s", e.Kind, e.Output)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Kind, e.Output)
}

// Unwrap lets errors.Is match the sentinel.
func (e *CommandError) Unwrap() error { return e.Kind }

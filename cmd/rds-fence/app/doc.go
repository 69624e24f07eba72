// Package app holds the wiring of each rds-fence subcommand: flags into an
// Options struct, Validate, then build and run. Every Options can be
// validated in tests without starting a server.
package app

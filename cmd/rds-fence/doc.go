// Command rds-fence is the one binary of the project. Its subcommands are
// thin: flags are parsed and validated in package app, which builds the
// components and runs them.
package main

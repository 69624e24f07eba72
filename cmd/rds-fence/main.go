package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rds-fence/rds-fence/cmd/rds-fence/app"
)

var version = "dev"

func usage() {
	fmt.Fprintf(os.Stderr, `usage: rds-fence <command> [flags]

commands:
  controller   CSI controller service (volume lifecycle on the RDS over SSH)
  webhook      admission webhook that refuses pods, bindings and VMIs which would attach an RWO volume to a second node
  rds-sim      RouterOS-compatible RDS simulator (SSH server, sparse files)
  node         CSI node plugin (host NQN, staging and publishing over NVMe/TCP or the loop transport, reconnect monitor)
  dev          the local environment: control plane, RDS simulator, controller, webhook, sidecars, two simulated nodes
  version      print the version

Run "rds-fence <command> -h" for a command's flags.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "controller":
		err = app.RunController(ctx, args, version)
	case "webhook":
		err = app.RunWebhook(ctx, args)
	case "rds-sim":
		err = app.RunSimulator(ctx, args)
	case "node":
		err = app.RunNode(ctx, args, version)
	case "dev":
		err = app.RunDev(ctx, args)
	case "version":
		fmt.Println(version)
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rds-fence:", err)
		os.Exit(1)
	}
}

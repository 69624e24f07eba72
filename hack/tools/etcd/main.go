// Command etcd is a thin wrapper that builds the upstream etcd server from the
// Go module proxy, for the test control plane (envtest) and `make run`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

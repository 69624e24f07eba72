package csi

import (
	"path/filepath"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestNodeGetInfoOverGRPC serves the node plugin on a unix socket and asks
// it who it is, as the kubelet's registrar does.
func TestNodeGetInfoOverGRPC(t *testing.T) {
	if _, err := NewNodeServer(NodeOptions{}, logr.Discard()); err == nil {
		t.Fatal("a node server without a node ID was built")
	}
	n, err := NewNodeServer(NodeOptions{NodeID: "worker-1", TopologyValue: "rds-a", Version: "v1"}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.Run(t.Context(), lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	info, err := csipb.NewNodeClient(conn).NodeGetInfo(t.Context(), &csipb.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetNodeId() != "worker-1" || info.GetAccessibleTopology().GetSegments()[DefaultTopologyKey] != "rds-a" {
		t.Fatalf("NodeGetInfo = %v", info)
	}
	plugin, err := csipb.NewIdentityClient(conn).GetPluginInfo(t.Context(), &csipb.GetPluginInfoRequest{})
	if err != nil || plugin.GetName() != DefaultDriverName || plugin.GetVendorVersion() != "v1" {
		t.Fatalf("GetPluginInfo = %v, %v", plugin, err)
	}
	caps, err := csipb.NewNodeClient(conn).NodeGetCapabilities(t.Context(), &csipb.NodeGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 0 {
		t.Fatalf("NodeGetCapabilities = %v, %v (nothing is implemented yet to advertise)", caps, err)
	}
}

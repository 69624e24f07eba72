package csi

import (
	"context"
	"errors"
	"net"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// NodeOptions configure the node plugin.
type NodeOptions struct {
	Name, Version string
	// NodeID is the Kubernetes node name (the controller's holder name).
	NodeID string
	// TopologyKey/TopologyValue: the node reaches this RDS.
	TopologyKey, TopologyValue string
}

// NodeServer is the node plugin's CSI Identity and Node services: the
// node's identity and topology (NodeGetInfo) and, given a transport
// (WithVolumes), staging and publishing (node_volume.go). Each volume's
// operations are serialised; a second concurrent one gets Aborted.
type NodeServer struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedNodeServer
	opts     NodeOptions
	log      logr.Logger
	vols     *NodeVolumes
	inflight *inFlight
}

// WithVolumes enables staging and publishing through v.
func (n *NodeServer) WithVolumes(v *NodeVolumes) *NodeServer {
	n.vols = v
	return n
}

// NewNodeServer validates the options.
func NewNodeServer(o NodeOptions, log logr.Logger) (*NodeServer, error) {
	if o.Name == "" {
		o.Name = DefaultDriverName
	}
	if o.TopologyKey == "" {
		o.TopologyKey = DefaultTopologyKey
	}
	if o.NodeID == "" || o.TopologyValue == "" {
		return nil, errors.New("the node ID and the topology value are required")
	}
	return &NodeServer{opts: o, log: log.WithName("csi-node"), inflight: newInFlight()}, nil
}

// GetPluginInfo reports the driver name and version.
func (n *NodeServer) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: n.opts.Name, VendorVersion: n.opts.Version}, nil
}

// GetPluginCapabilities: topology only (the node plugin has no controller service).
func (n *NodeServer) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	return &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{{Type: &csipb.PluginCapability_Service_{
		Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}}}}, nil
}

// Probe: the node plugin is ready once it serves.
func (n *NodeServer) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	return &csipb.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// NodeGetInfo reports the node name (the holder name the controller
// fences by) and its topology segment. The node's host NQN, which the
// storage fence admits, travels on the Node annotation
// rds-fence.csi.dev/host-nqn (a topology value cannot hold ':').
func (n *NodeServer) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: n.opts.NodeID,
		AccessibleTopology: &csipb.Topology{Segments: map[string]string{n.opts.TopologyKey: n.opts.TopologyValue}}}, nil
}

// NodeGetCapabilities advertises staging when a transport is configured.
func (n *NodeServer) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	if n.vols == nil {
		return &csipb.NodeGetCapabilitiesResponse{}, nil
	}
	rpc := func(t csipb.NodeServiceCapability_RPC_Type) *csipb.NodeServiceCapability {
		return &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csipb.NodeGetCapabilitiesResponse{Capabilities: []*csipb.NodeServiceCapability{
		rpc(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME),
		rpc(csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS),
		rpc(csipb.NodeServiceCapability_RPC_EXPAND_VOLUME),
	}}, nil
}

// Run serves on lis until ctx is done.
func (n *NodeServer) Run(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, n)
	csipb.RegisterNodeServer(srv, n)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	n.log.Info("serving CSI node", "address", lis.Addr().String(), "node", n.opts.NodeID)
	return srv.Serve(lis)
}

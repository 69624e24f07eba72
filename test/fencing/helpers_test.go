package fencing

import (
	"context"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

func capability(block bool) *csipb.VolumeCapability {
	if block {
		return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	}
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func createReq(name string, block bool) *csipb.CreateVolumeRequest {
	return &csipb.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csipb.VolumeCapability{capability(block)},
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 1 << 30}}
}

func (f *fixture) publish(id, node string, block bool) (*csipb.ControllerPublishVolumeResponse, error) {
	return f.drv.ControllerPublishVolume(f.t.Context(), &csipb.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: node, VolumeCapability: capability(block)})
}

func (f *fixture) mustPublish(id, node string, block bool) {
	f.t.Helper()
	if _, err := f.publish(id, node, block); err != nil {
		f.t.Fatalf("publish %s to %s: %v", id, node, err)
	}
}

func (f *fixture) unpublish(id, node string) error {
	_, err := f.drv.ControllerUnpublishVolume(f.t.Context(), &csipb.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node})
	return err
}

func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}

func deleteReq(id string) *csipb.DeleteVolumeRequest { return &csipb.DeleteVolumeRequest{VolumeId: id} }

func listReq() *csipb.ListVolumesRequest { return &csipb.ListVolumesRequest{} }

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// waitFor polls cond until it holds (10 s at most).
func waitFor(f *fixture, cond func(ctx context.Context) bool) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(f.t.Context(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		f.t.Fatal("condition never held")
	}
}

func nodeMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

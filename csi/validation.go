package csi

import (
	"fmt"
	"sort"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rds-fence/rds-fence/rds"
)

// Supported filesystems for mount volumes; ext4 is the default.
var supportedFS = map[string]bool{"": true, "ext4": true, "xfs": true}

// validateCapabilities checks that every requested capability can be
// served. Multi-node writers are allowed for raw block only (KubeVirt live
// migration); a shared filesystem without a cluster filesystem would
// corrupt, so it is refused here rather than at publish time.
func validateCapabilities(caps []*csipb.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("volume capabilities are required")
	}
	for _, c := range caps {
		if c == nil || c.GetAccessMode() == nil {
			return fmt.Errorf("volume capability without access mode")
		}
		block := c.GetBlock() != nil
		mount := c.GetMount()
		if block == (mount != nil) {
			return fmt.Errorf("volume capability must be exactly one of block or mount")
		}
		if mount != nil && !supportedFS[mount.GetFsType()] {
			return fmt.Errorf("filesystem %q is not supported (use ext4 or xfs)", mount.GetFsType())
		}
		switch m := c.GetAccessMode().GetMode(); m {
		case csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
			csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
			csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
			csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		case csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
			if !block {
				return fmt.Errorf("access mode %s is supported for raw block volumes only (KubeVirt live migration); a filesystem mounted on two nodes would be corrupted", m)
			}
		default:
			return fmt.Errorf("access mode %s is not supported", m)
		}
	}
	return nil
}

// sizeFor applies the capacity range: the smallest size of at least
// required_bytes (DefaultSize when unset), rounded up to the RDS allocation
// unit, and refused when that passes limit_bytes. Nothing is ever truncated.
func sizeFor(r *csipb.CapacityRange, def int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, fmt.Errorf("capacity range must not be negative")
	}
	if lim > 0 && req > lim {
		return 0, fmt.Errorf("required bytes %d exceed limit bytes %d", req, lim)
	}
	want := req
	if want == 0 {
		want = def
		if lim > 0 && lim < want {
			// Only a limit: the largest whole MiB within it.
			if want = lim / rds.MiB * rds.MiB; want == 0 {
				return 0, errOutOfRange{fmt.Sprintf("limit %d bytes is below the RDS allocation unit (1 MiB)", lim)}
			}
		}
	}
	size, ok := rds.RoundUpSize(want)
	if !ok {
		return 0, fmt.Errorf("size %d is too large", want)
	}
	if lim > 0 && size > lim {
		return 0, errOutOfRange{fmt.Sprintf("%d bytes rounded up to the RDS allocation unit (1 MiB) is %d, above the limit %d", want, size, lim)}
	}
	return size, nil
}

// errOutOfRange marks a capacity range that cannot be met.
type errOutOfRange struct{ msg string }

func (e errOutOfRange) Error() string { return e.msg }

// fits reports whether an existing size satisfies a capacity range.
func fits(size int64, r *csipb.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

// Parameter keys understood in CreateVolume. The csi.storage.k8s.io/*
// keys are passed by the external-provisioner with --extra-create-metadata.
const (
	ParamFSType       = "csi.storage.k8s.io/fstype"
	ParamPVCName      = "csi.storage.k8s.io/pvc/name"
	ParamPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	ParamPVName       = "csi.storage.k8s.io/pv/name"
	// ParamMigrationTimeout bounds how long an RWX block volume may stay
	// attached to two nodes during a KubeVirt live migration.
	ParamMigrationTimeout = "migrationTimeout"
)

// Volume context keys handed to the node plugin.
const (
	CtxNQN           = "nqn"
	CtxTargetAddress = "targetAddress"
	CtxTargetPort    = "targetPort"
	CtxPVCName       = "pvcName"
	CtxPVCNamespace  = "pvcNamespace"
	CtxMigrationTmo  = "migrationTimeout"
)

var knownParams = map[string]bool{ParamFSType: true, ParamPVCName: true, ParamPVCNamespace: true, ParamPVName: true, ParamMigrationTimeout: true}

// validateParams refuses unknown StorageClass parameters, so that a typo
// is an error rather than a silently ignored setting.
func validateParams(p map[string]string) error {
	var unknown []string
	for k := range p {
		if !knownParams[k] && !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown StorageClass parameter(s) %s", strings.Join(unknown, ", "))
	}
	if fs := p[ParamFSType]; !supportedFS[fs] {
		return fmt.Errorf("filesystem %q is not supported (use ext4 or xfs)", fs)
	}
	return nil
}

package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/rds-fence/rds-fence/rds"
)

// pvcNamePattern matches the names the external-provisioner generates:
// "pvc-" followed by the PVC's UID.
var pvcNamePattern = regexp.MustCompile(`^pvc-([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$`)

// VolumeIDs derives every RDS identifier of a volume. The volume ID that the
// CO sees is the RDS slot itself, so no lookup table is needed.
//
// ID scheme (chosen to fit the 32-character slot limit reported for RDS):
// slot = SlotPrefix + hex digits, exactly rds.MaxSlotLen characters long.
// For a provisioner name "pvc-<uuid>" the digits are the UUID's own hex
// digits (dashes removed, truncated), so an operator can match an RDS slot
// to its PV by eye; for any other name they are the SHA-256 of the name.
// With the default prefix "pvc-" that is 28 hex digits (112 bits), so
// collisions are not a practical concern.
type VolumeIDs struct {
	// SlotPrefix marks the driver's disks on the RDS (default "pvc-"). The
	// reconciler never touches a disk without it.
	SlotPrefix string
	// NQNPrefix is prepended to the slot to form the subsystem NQN
	// (default "nqn.2000-02.com.mikrotik:").
	NQNPrefix string
	// BasePath is the directory of backing files on the RDS
	// (default "/storage-pool/kubernetes-volumes").
	BasePath string
}

// Validate checks the scheme's parameters.
func (v VolumeIDs) Validate() error {
	if len(v.SlotPrefix) < 1 || len(v.SlotPrefix) > 8 || rds.ValidateSlot(v.SlotPrefix) != nil {
		return fmt.Errorf("slot prefix %q must be 1-8 characters of [a-z0-9-]", v.SlotPrefix)
	}
	if err := rds.ValidateNQN(v.NQNPrefix + v.SlotPrefix + "x"); err != nil || !strings.HasSuffix(v.NQNPrefix, ":") {
		return fmt.Errorf("NQN prefix %q must look like nqn.yyyy-mm.domain: (ending in ':')", v.NQNPrefix)
	}
	if err := rds.ValidatePath(v.BasePath); err != nil {
		return fmt.Errorf("base path: %w", err)
	}
	return nil
}

// Slot returns the slot (= volume ID) for a CreateVolume name.
func (v VolumeIDs) Slot(name string) string {
	n := rds.MaxSlotLen - len(v.SlotPrefix)
	var digits string
	if m := pvcNamePattern.FindStringSubmatch(name); m != nil {
		digits = strings.Join(m[1:], "")
	} else {
		sum := sha256.Sum256([]byte(name))
		digits = hex.EncodeToString(sum[:])
	}
	return v.SlotPrefix + digits[:n]
}

// Owns reports whether a volume ID has this driver's shape: the prefix
// followed by lower-case hex digits, exactly rds.MaxSlotLen long.
func (v VolumeIDs) Owns(id string) bool {
	if len(id) != rds.MaxSlotLen || !strings.HasPrefix(id, v.SlotPrefix) {
		return false
	}
	for _, c := range id[len(v.SlotPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NQN is the NVMe subsystem NQN of the volume's export.
func (v VolumeIDs) NQN(slot string) string { return v.NQNPrefix + slot }

// FilePath is the backing file of the volume on the RDS.
func (v VolumeIDs) FilePath(slot string) string {
	return strings.TrimSuffix(v.BasePath, "/") + "/" + slot + ".img"
}

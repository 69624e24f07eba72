package devenv

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/csi"
)

// Kubelet stands in for the kubelet's volume manager on a simulated node
// (no container runtime runs here): for every pod bound to the node whose
// claims' VolumeAttachments are attached, it stages and publishes the
// volumes through the node plugin exactly as the kubelet would (staging
// path, publish context from the VolumeAttachment, capability from the
// PV) and marks the pod Running; for a deleted pod it unpublishes,
// unstages what no other pod uses and removes the pod. It reports the
// staged volumes in the Node's status.volumesInUse, as the kubelet does,
// so the attach-detach controller does not detach a mounted volume.
//
// A node whose Node object was deleted is dead, as if powered off: its
// stand-in shuts its file systems down at once without flushing anything
// (FS_IOC_SHUTDOWN, NOLOGFLUSH) and does nothing more. The loop transport
// cannot take a node's device away the way the RDS fence refuses an
// NVMe/TCP connection, so without that a "dead" node's page cache and
// journal would be written when the environment stops, over the volume
// another node has taken over.
type Kubelet struct {
	env  *Env
	node string
	dir  string
	csi  csipb.NodeClient
	conn *grpc.ClientConn
	log  *log.Logger

	logFile *os.File

	mu        sync.Mutex
	published map[string]published // pod UID/PV name -> target
	staged    map[string]string    // PV name -> volume ID
	inUse     []string             // last reported status.volumesInUse
	dead      bool
}

type published struct {
	pod, pv, volumeID, target string
}

func newKubelet(e *Env, node, dir string) (*Kubelet, error) {
	conn, err := grpc.NewClient("unix://"+e.NodeSocket(node), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	f, err := os.Create(e.Log("kubelet-" + node))
	if err != nil {
		return nil, err
	}
	return &Kubelet{env: e, node: node, dir: dir, csi: csipb.NewNodeClient(conn), conn: conn, logFile: f,
		log: log.New(f, "", log.LstdFlags|log.Lmicroseconds), published: map[string]published{}, staged: map[string]string{}}, nil
}

// Run syncs every 100ms until ctx ends.
func (k *Kubelet) Run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := k.sync(ctx); err != nil && ctx.Err() == nil {
				k.log.Printf("sync: %v", err)
			}
		}
	}
}

func (k *Kubelet) staging(pv string) string {
	return filepath.Join(k.dir, "plugins", "kubernetes.io", "csi", pv, "globalmount")
}

func (k *Kubelet) sync(ctx context.Context) error {
	c := k.env.Client
	k.mu.Lock()
	dead := k.dead
	k.mu.Unlock()
	if dead {
		return nil
	}
	if err := c.Get(ctx, client.ObjectKey{Name: k.node}, &corev1.Node{}); apierrors.IsNotFound(err) {
		k.die()
		return nil
	} else if err != nil {
		return err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.MatchingFields{"spec.nodeName": k.node}); err != nil {
		return err
	}
	live := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			if !k.teardownPod(ctx, string(p.UID)) {
				continue // the kubelet removes a pod only once its volumes are torn down
			}
			zero := int64(0)
			if err := c.Delete(ctx, p, &client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				k.log.Printf("removing pod %s/%s: %v", p.Namespace, p.Name, err)
			}
			continue
		}
		live[string(p.UID)] = true
		if p.Status.Phase == corev1.PodRunning {
			continue
		}
		if err := k.setupPod(ctx, p); err != nil {
			k.log.Printf("pod %s/%s: %v", p.Namespace, p.Name, err)
			continue
		}
	}
	k.mu.Lock()
	var gone []string
	for key, pub := range k.published {
		if !live[pub.pod] {
			gone = append(gone, key)
		}
	}
	k.mu.Unlock()
	for _, key := range gone {
		k.teardownKey(ctx, key)
	}
	k.unstageUnused(ctx)
	return k.reportInUse(ctx)
}

// reportInUse writes the staged volumes to the Node's status.volumesInUse.
func (k *Kubelet) reportInUse(ctx context.Context) error {
	k.mu.Lock()
	var inUse []string
	for _, id := range k.staged {
		inUse = append(inUse, "kubernetes.io/csi/"+csi.DefaultDriverName+"^"+id)
	}
	sort.Strings(inUse)
	same := strings.Join(inUse, ",") == strings.Join(k.inUse, ",")
	k.mu.Unlock()
	if same {
		return nil
	}
	var n corev1.Node
	if err := k.env.Client.Get(ctx, client.ObjectKey{Name: k.node}, &n); err != nil {
		return err
	}
	n.Status.VolumesInUse = nil
	for _, v := range inUse {
		n.Status.VolumesInUse = append(n.Status.VolumesInUse, corev1.UniqueVolumeName(v))
	}
	if err := k.env.Client.Status().Update(ctx, &n); err != nil {
		return err
	}
	k.mu.Lock()
	k.inUse = inUse
	k.mu.Unlock()
	return nil
}

// die: the node is gone, as if powered off. Its file systems are shut
// down without a flush, so nothing more of it reaches the disks.
func (k *Kubelet) die() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return
	}
	k.dead = true
	for pv := range k.staged {
		if err := shutdownFS(k.staging(pv)); err != nil {
			k.log.Printf("shutting down the file system of %s: %v", pv, err)
		}
	}
	k.log.Printf("node %s deleted: dead (file systems shut down, nothing more is written)", k.node)
}

// shutdownFS shuts the file system mounted at dir down without flushing
// its log (FS_IOC_SHUTDOWN with NOLOGFLUSH, as `xfs_io -x -c "shutdown"`):
// every later write fails and nothing pending is written. A block volume
// (no mount) has nothing to shut down.
func shutdownFS(dir string) error {
	// only a mount point: the ioctl on a plain directory would shut down
	// the file system holding it (the developer's own)
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	} else if err != nil {
		return err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return err
	}
	if st.Dev == parent.Dev {
		return nil // not mounted (a block volume, or already unstaged)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	const fsIOCShutdown = 0x8004587d // _IOR('X', 125, __u32)
	const noLogFlush = 2
	return unix.IoctlSetPointerInt(fd, fsIOCShutdown, noLogFlush)
}

// setupPod stages and publishes the pod's claims once every one is
// attached, then marks the pod Running.
func (k *Kubelet) setupPod(ctx context.Context, p *corev1.Pod) error {
	c := k.env.Client
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		var pvc corev1.PersistentVolumeClaim
		if err := c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: v.PersistentVolumeClaim.ClaimName}, &pvc); err != nil {
			return err
		}
		if pvc.Spec.VolumeName == "" {
			return fmt.Errorf("claim %s not bound yet", pvc.Name)
		}
		var pv corev1.PersistentVolume
		if err := c.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, &pv); err != nil {
			return err
		}
		if pv.Spec.CSI == nil {
			return fmt.Errorf("PV %s is not a CSI volume", pv.Name)
		}
		va, err := k.attachment(ctx, pv.Name)
		if err != nil {
			return err
		}
		if err := k.reportedAttached(ctx, pv.Spec.CSI.Driver+"^"+pv.Spec.CSI.VolumeHandle); err != nil {
			return err
		}
		if err := k.publish(ctx, p, &pv, va); err != nil {
			return err
		}
	}
	p.Status.Phase = corev1.PodRunning
	now := metav1.Now()
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	p.Status.StartTime = &now
	if err := c.Status().Update(ctx, p); err != nil {
		return err
	}
	k.log.Printf("pod %s/%s running", p.Namespace, p.Name)
	return nil
}

// attachment is the PV's attached VolumeAttachment for this node.
func (k *Kubelet) attachment(ctx context.Context, pv string) (*storagev1.VolumeAttachment, error) {
	var vas storagev1.VolumeAttachmentList
	if err := k.env.Client.List(ctx, &vas); err != nil {
		return nil, err
	}
	for i := range vas.Items {
		va := &vas.Items[i]
		if va.Spec.NodeName == k.node && va.Spec.Source.PersistentVolumeName != nil && *va.Spec.Source.PersistentVolumeName == pv {
			if !va.Status.Attached {
				msg := "attaching"
				if va.Status.AttachError != nil {
					msg = va.Status.AttachError.Message
				}
				return nil, fmt.Errorf("volume %s not attached to %s yet: %s", pv, k.node, msg)
			}
			return va, nil
		}
	}
	return nil, fmt.Errorf("no VolumeAttachment of %s for %s yet", pv, k.node)
}

// reportedAttached: like the kubelet, wait until the attach-detach
// controller lists the volume in the Node's status.volumesAttached (it
// does once its own attach operation has seen the VolumeAttachment
// attached).
func (k *Kubelet) reportedAttached(ctx context.Context, unique string) error {
	var n corev1.Node
	if err := k.env.Client.Get(ctx, client.ObjectKey{Name: k.node}, &n); err != nil {
		return err
	}
	for _, v := range n.Status.VolumesAttached {
		if string(v.Name) == "kubernetes.io/csi/"+unique {
			return nil
		}
	}
	return fmt.Errorf("volume %s attached, but not yet in node %s's status.volumesAttached", unique, k.node)
}

func capability(pv *corev1.PersistentVolume) *csipb.VolumeCapability {
	mode := csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	for _, m := range pv.Spec.AccessModes {
		if m == corev1.ReadWriteMany {
			mode = csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		}
	}
	vc := &csipb.VolumeCapability{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode}}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		vc.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	} else {
		vc.AccessType = &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: pv.Spec.CSI.FSType}}
	}
	return vc
}

func (k *Kubelet) publish(ctx context.Context, p *corev1.Pod, pv *corev1.PersistentVolume, va *storagev1.VolumeAttachment) error {
	id, vc := pv.Spec.CSI.VolumeHandle, capability(pv)
	staging := k.staging(pv.Name)
	if _, err := k.csi.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc,
		PublishContext: va.Status.AttachmentMetadata, VolumeContext: pv.Spec.CSI.VolumeAttributes}); err != nil {
		return fmt.Errorf("NodeStageVolume %s: %w", pv.Name, err)
	}
	k.mu.Lock()
	k.staged[pv.Name] = id
	k.mu.Unlock()
	target := filepath.Join(k.dir, "pods", string(p.UID), "volumes", "kubernetes.io~csi", pv.Name, "mount")
	if vc.GetBlock() != nil {
		target = filepath.Join(k.dir, "plugins", "kubernetes.io", "csi", "volumeDevices", "publish", pv.Name, string(p.UID))
	}
	if _, err := k.csi.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: vc, PublishContext: va.Status.AttachmentMetadata, VolumeContext: pv.Spec.CSI.VolumeAttributes}); err != nil {
		return fmt.Errorf("NodePublishVolume %s: %w", pv.Name, err)
	}
	k.mu.Lock()
	k.published[string(p.UID)+"/"+pv.Name] = published{pod: string(p.UID), pv: pv.Name, volumeID: id, target: target}
	k.mu.Unlock()
	k.log.Printf("pod %s/%s: %s staged at %s, published at %s", p.Namespace, p.Name, pv.Name, staging, target)
	return nil
}

// Published returns the targets published for pod uid (for the story's checks).
func (k *Kubelet) Published(uid string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, p := range k.published {
		if p.pod == uid {
			out = append(out, p.target)
		}
	}
	sort.Strings(out)
	return out
}

// teardownPod unpublishes the pod's volumes; true when all are.
func (k *Kubelet) teardownPod(ctx context.Context, uid string) bool {
	k.mu.Lock()
	var keys []string
	for key, p := range k.published {
		if p.pod == uid {
			keys = append(keys, key)
		}
	}
	k.mu.Unlock()
	ok := true
	for _, key := range keys {
		ok = k.teardownKey(ctx, key) && ok
	}
	return ok
}

func (k *Kubelet) teardownKey(ctx context.Context, key string) bool {
	k.mu.Lock()
	p, ok := k.published[key]
	k.mu.Unlock()
	if !ok {
		return true
	}
	if _, err := k.csi.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: p.volumeID, TargetPath: p.target}); err != nil {
		k.log.Printf("NodeUnpublishVolume %s: %v", p.pv, err)
		return false
	}
	k.mu.Lock()
	delete(k.published, key)
	k.mu.Unlock()
	k.log.Printf("unpublished %s from %s", p.pv, p.target)
	return true
}

// unstageUnused unstages every staged PV no published pod uses.
func (k *Kubelet) unstageUnused(ctx context.Context) {
	k.mu.Lock()
	used := map[string]bool{}
	for _, p := range k.published {
		used[p.pv] = true
	}
	var idle []string
	for pv := range k.staged {
		if !used[pv] {
			idle = append(idle, pv)
		}
	}
	k.mu.Unlock()
	for _, pv := range idle {
		k.mu.Lock()
		id := k.staged[pv]
		k.mu.Unlock()
		if _, err := k.csi.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: k.staging(pv)}); err != nil {
			k.log.Printf("NodeUnstageVolume %s: %v", pv, err)
			continue
		}
		k.mu.Lock()
		delete(k.staged, pv)
		k.mu.Unlock()
		k.log.Printf("unstaged %s", pv)
	}
}

// Cleanup unpublishes and unstages everything (the environment stops).
func (k *Kubelet) Cleanup(ctx context.Context) {
	k.mu.Lock()
	keys := make([]string, 0, len(k.published))
	for key := range k.published {
		keys = append(keys, key)
	}
	k.mu.Unlock()
	for _, key := range keys {
		k.teardownKey(ctx, key)
	}
	k.unstageUnused(ctx)
	_ = k.conn.Close()
	_ = k.logFile.Close()
}

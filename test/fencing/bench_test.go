package fencing

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/csi"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkControllerPublish measures ControllerPublishVolume (cache reads,
// rules, RDS fence, PV write to the real API server) against the simulator
// over SSH, next to the bare RDS call it wraps (SetAllowedHost), with 0 and
// 5 ms of injected RDS latency. Reported: p50/p99 of both and the p99
// overhead of the fencing layer.
func BenchmarkControllerPublish(b *testing.B) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run(fmt.Sprintf("rds-latency=%s", lat), func(b *testing.B) {
			f := newFixture(b)
			node := f.node("a")
			const pool = 20
			var ids []string
			for i := range pool {
				ids = append(ids, f.volume(fmt.Sprintf("bench-%d", i), false))
			}
			writeID := f.volume("bench-write", false)
			writePV := f.pvName(writeID)
			writeRV := ""
			f.sim.Sim.SetLatency(lat)
			var pub, bare, write []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := ids[i%pool]
				start := time.Now()
				if _, err := f.publish(id, node, false); err != nil {
					b.Fatal(err)
				}
				pub = append(pub, time.Since(start))
				b.StopTimer()
				if err := f.unpublish(id, node); err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				if err := f.rds.SetAllowedHost(context.Background(), id, hostNQN(node)); err != nil {
					b.Fatal(err)
				}
				bare = append(bare, time.Since(start))
				if err := f.rds.SetAllowedHost(context.Background(), id, csi.NobodyNQN); err != nil {
					b.Fatal(err)
				}
				// The PV write alone, one merge patch with a known resourceVersion
				// as a publish makes it, on a PV publish does not touch.
				rec := attachment.Record{VolumeID: writeID, PV: writePV, Mode: attachment.ModeSingleNode,
					Holders: []attachment.Holder{{Node: node, HostNQN: hostNQN(node)}}, ResourceVersion: writeRV}
				free := attachment.Record{VolumeID: writeID, PV: writePV}
				start = time.Now()
				rv, err := f.cluster.PersistPV(context.Background(), withRV(free, writeRV), rec)
				if err != nil {
					b.Fatal(err)
				}
				write = append(write, time.Since(start))
				rec.ResourceVersion = rv
				if writeRV, err = f.cluster.PersistPV(context.Background(), rec, free); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(percentile(pub, 0.5).Microseconds())/1000, "publish-p50-ms")
			b.ReportMetric(float64(percentile(pub, 0.99).Microseconds())/1000, "publish-p99-ms")
			b.ReportMetric(float64(percentile(bare, 0.5).Microseconds())/1000, "bare-rds-p50-ms")
			b.ReportMetric(float64(percentile(bare, 0.99).Microseconds())/1000, "bare-rds-p99-ms")
			b.ReportMetric(float64(percentile(write, 0.5).Microseconds())/1000, "pv-write-p50-ms")
			b.ReportMetric(float64(percentile(write, 0.99).Microseconds())/1000, "pv-write-p99-ms")
			b.ReportMetric(float64((percentile(pub, 0.99)-percentile(bare, 0.99)).Microseconds())/1000, "overhead-p99-ms")
		})
	}
}

// BenchmarkRebuild10000 creates 10,000 annotated PVs with attached
// VolumeAttachments in the real API server and 10,000 disks on the
// simulator, then measures a rebuild: the List calls alone, the whole
// rebuild, the store's resident memory, and then one drift check while
// serving (the same lists, plus a lock per volume).
func BenchmarkRebuild10000(b *testing.B) {
	const n = 10000
	f := newFixture(b)
	node := f.node("a")
	ctx := context.Background()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("pvc-%028x", i)
		ids = append(ids, id)
		f.sim.Sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=1M slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s" nvme-tcp-server-allow-host-name="%s"`, id, id, id, hostNQN(node)))
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			createAttachedPV(b, f, fmt.Sprintf("%s-pv-%05d", f.ns, i), id, node)
		})
	}
	wg.Wait()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := f.cluster.ListPVs(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := f.cluster.AttachedNodes(ctx); err != nil {
			b.Fatal(err)
		}
		listTime := time.Since(start)

		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f.mgr.Store = attachment.NewStore()
		start = time.Now()
		if _, err := f.mgr.Rebuild(ctx); err != nil { // the result is dropped: only the store stays alive
			b.Fatal(err)
		}
		rebuildTime := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if f.mgr.Store.Len() < n {
			b.Fatalf("rebuilt %d records, want %d", f.mgr.Store.Len(), n)
		}
		start = time.Now()
		drifts, err := f.mgr.CheckDrift(ctx, &attachment.DriftChecker{NoAttachmentAfter: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		driftTime := time.Since(start)
		if len(mine(drifts, ids...)) != 0 {
			b.Fatalf("drift check after a clean rebuild found %d drifts", len(drifts))
		}
		b.ReportMetric(listTime.Seconds(), "list-s")
		b.ReportMetric(rebuildTime.Seconds(), "rebuild-s")
		b.ReportMetric(driftTime.Seconds(), "drift-check-s")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), "store-MiB")
	}
}

func createAttachedPV(b *testing.B, f *fixture, name, id, node string) {
	rec := attachment.Record{VolumeID: id, PV: name, Mode: attachment.ModeSingleNode,
		Holders: []attachment.Holder{{Node: node, HostNQN: hostNQN(node), Since: time.Now()}}}
	ann, _ := attachment.Annotations(rec)
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name,
		Annotations: map[string]string{attachment.AnnotationAttachment: *ann[attachment.AnnotationAttachment]}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: csi.DefaultDriverName, VolumeHandle: id}}}}
	if err := direct.Create(context.Background(), pv); err != nil {
		b.Error(err)
		return
	}
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-" + name},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: node,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &name}}}
	if err := direct.Create(context.Background(), va); err != nil {
		b.Error(err)
		return
	}
	va.Status.Attached = true
	if err := direct.Status().Update(context.Background(), va); err != nil {
		b.Error(err)
	}
}

func withRV(r attachment.Record, rv string) attachment.Record {
	r.ResourceVersion = rv
	return r
}

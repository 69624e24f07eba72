package fencing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
)

// flakyWrites fails a share of PV writes, like an overloaded API server.
type flakyWrites struct {
	mu   sync.Mutex
	rng  *rand.Rand
	rate float64
}

func (f *flakyWrites) fail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < f.rate
}

// Many goroutines publish and unpublish RWO volumes across three nodes
// while PV writes fail at random and the controller restarts (a new store
// rebuilt from the cluster and the RDS). After every step no volume is
// recorded or fenced for two nodes, and memory, PV and fence agree; at the
// end they equal the VolumeAttachment truth.
func TestInvariantUnderFaultsAndRestarts(t *testing.T) {
	flaky := &flakyWrites{rng: rand.New(rand.NewPCG(1, 2)), rate: 0.3}
	f := newFixture(t, func(c *kube.Cluster) {
		c.Writer = interceptor.NewClient(directWatch, interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
				if flaky.fail() {
					return apierrors.NewTimeoutError("injected", 1)
				}
				return cl.Patch(ctx, obj, p, opts...)
			},
		})
	})
	nodeNames := []string{f.node("a"), f.node("b"), f.node("c")}
	var vols []string
	pvOf := map[string]string{}
	for i := range 6 {
		id := f.volume(fmt.Sprintf("v%d", i), false)
		vols = append(vols, id)
		pvOf[id] = f.pvName(id)
	}

	// truth is the VolumeAttachment view: who the attacher was told holds
	// each volume. volMu serialises an operation and its truth update per
	// volume; restart takes them all.
	truth := map[string]*string{} // filled once; each value guarded by volMu
	volMu := map[string]*sync.Mutex{}
	for _, v := range vols {
		volMu[v] = &sync.Mutex{}
		truth[v] = new(string)
	}
	var world sync.RWMutex
	check := func(v string) error {
		holders := f.mgr.Holders(v)
		if len(holders) > 1 {
			return fmt.Errorf("volume %s recorded for %v", v, holders)
		}
		fence := f.allowed(v)
		want, pvWant := csi.NobodyNQN, ""
		if len(holders) == 1 {
			want, pvWant = hostNQN(holders[0]), holders[0]
		}
		if fence != want {
			return fmt.Errorf("volume %s: memory says %v, fence admits %q", v, holders, fence)
		}
		if got := nodes(f.persisted(v)); got != pvWant {
			return fmt.Errorf("volume %s: memory says %v, PV says %q", v, holders, got)
		}
		if holders := strings.Join(holders, ""); holders != *truth[v] {
			return fmt.Errorf("volume %s: memory says %q, attachments say %q", v, holders, *truth[v])
		}
		return nil
	}
	t.Cleanup(func() {
		for _, v := range vols {
			for _, n := range nodeNames {
				_ = direct.Delete(context.Background(), &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("va-%s-%s", v, n[len(n)-1:])}})
			}
		}
	})
	setVA := func(v, node string, attached bool) {
		name := fmt.Sprintf("va-%s-%s", v, node[len(node)-1:])
		if !attached {
			_ = direct.Delete(context.Background(), &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name}})
			return
		}
		pv := pvOf[v]
		va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: node, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
		if err := direct.Create(context.Background(), va); err != nil {
			t.Error(err)
			return
		}
		va.Status.Attached = true
		if err := direct.Status().Update(context.Background(), va); err != nil {
			t.Error(err)
		}
	}

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 40 {
				v := vols[rng.IntN(len(vols))]
				n := nodeNames[rng.IntN(len(nodeNames))]
				world.RLock()
				volMu[v].Lock()
				if rng.IntN(2) == 0 {
					if _, err := f.publish(v, n, false); err == nil && *truth[v] != n {
						*truth[v] = n
						setVA(v, n, true)
					}
				} else if err := f.unpublish(v, n); err == nil && *truth[v] == n {
					*truth[v] = ""
					setVA(v, n, false)
				}
				err := check(v)
				volMu[v].Unlock()
				world.RUnlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() { // restarts
		for range 3 {
			world.Lock()
			f.mgr.Store = attachment.NewStore()
			var err error
			for try := 0; try < 10; try++ { // PV writes may fail; a real controller retries too
				if _, err = f.mgr.Rebuild(context.Background()); err == nil {
					break
				}
			}
			if err != nil {
				t.Errorf("rebuild: %v", err)
			}
			for _, v := range vols {
				if err := check(v); err != nil {
					t.Errorf("after restart: %v", err)
				}
			}
			world.Unlock()
		}
	})
	wg.Wait()
	for _, v := range vols {
		if err := check(v); err != nil {
			t.Error(err)
		}
	}
	failed := testutilValue(f.metrics.Operations.WithLabelValues("publish", "error")) +
		testutilValue(f.metrics.Operations.WithLabelValues("unpublish", "error"))
	if failed == 0 {
		t.Error("no injected failure hit an operation; the test exercised no rollback")
	}
	t.Logf("operations failed by injected faults: %v, conflicts: %v", failed, testutilValue(f.metrics.Conflicts))
}

// Three nodes race for one free RWO volume: exactly one wins, and the fence
// names it.
func TestConcurrentPublishesOfOneVolume(t *testing.T) {
	f := newFixture(t)
	nodeNames := []string{f.node("a"), f.node("b"), f.node("c")}
	for round := range 5 {
		id := f.volume(fmt.Sprintf("race-%d", round), false)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for _, n := range nodeNames {
			wg.Go(func() {
				if _, err := f.publish(id, n, false); err == nil {
					mu.Lock()
					winners = append(winners, n)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		if got := f.allowed(id); got != hostNQN(winners[0]) {
			t.Fatalf("round %d: fence %q, winner %s", round, got, winners[0])
		}
	}
}

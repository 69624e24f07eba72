package attachment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pvWith(handle string, ann map[string]string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1", Annotations: ann},
		Spec: corev1.PersistentVolumeSpec{
			ClaimRef:               &corev1.ObjectReference{Namespace: "ns", Name: "claim"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{VolumeHandle: handle}},
		},
	}
}

func TestAnnotationRoundTrip(t *testing.T) {
	r := held(ModeMultiNodeBlock, "a", "b")
	r.Migration = &Migration{Namespace: "ns", Name: "m", VMI: "vm", Source: "a", Target: "b", Started: t0, Deadline: t0.Add(time.Hour)}
	ann, err := Annotations(r)
	if err != nil {
		t.Fatal(err)
	}
	if *ann[AnnotationAttachedNodes] != "a,b" {
		t.Fatalf("attached-nodes = %q", *ann[AnnotationAttachedNodes])
	}
	got, ok, err := Decode(pvWith("pvc-1", map[string]string{AnnotationAttachment: *ann[AnnotationAttachment]}))
	if err != nil || !ok {
		t.Fatalf("decode: %v %v", ok, err)
	}
	if got.PVC != "ns/claim" || got.PV != "pv-1" || got.Mode != r.Mode || len(got.Holders) != 2 ||
		!got.Holders[1].Since.Equal(t0) || got.Migration == nil || !got.Migration.Deadline.Equal(t0.Add(time.Hour)) {
		t.Fatalf("round trip = %+v", got)
	}
	free, err := Annotations(Record{VolumeID: "pvc-1"})
	if err != nil || free[AnnotationAttachment] != nil {
		t.Fatalf("a free volume must remove the annotation: %v %v", free, err)
	}
	if _, ok, err := Decode(pvWith("pvc-1", nil)); ok || err != nil {
		t.Fatalf("no annotation = %v %v", ok, err)
	}
}

func TestDecodeFailsClosed(t *testing.T) {
	for name, raw := range map[string]string{
		"not json":        `{`,
		"future version":  `{"v":2,"volumeID":"pvc-1","mode":"SingleNode","holders":[{"node":"a"}]}`,
		"other volume":    `{"v":1,"volumeID":"pvc-2","mode":"SingleNode","holders":[{"node":"a"}]}`,
		"two RWO holders": `{"v":1,"volumeID":"pvc-1","mode":"SingleNode","holders":[{"node":"a"},{"node":"b"}]}`,
		"three holders":   `{"v":1,"volumeID":"pvc-1","mode":"MultiNodeBlock","holders":[{"node":"a"},{"node":"b"},{"node":"c"}]}`,
		"unknown mode":    `{"v":1,"volumeID":"pvc-1","mode":"Everyone","holders":[{"node":"a"}]}`,
		"empty node":      `{"v":1,"volumeID":"pvc-1","mode":"SingleNode","holders":[{"node":""}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Decode(pvWith("pvc-1", map[string]string{AnnotationAttachment: raw}))
			if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), "PV pv-1") {
				t.Fatalf("err = %v, want ErrUnknownFormat naming the PV", err)
			}
		})
	}
}

func TestLocksDoNotGrowAndSerialise(t *testing.T) {
	s := NewStore()
	var wg sync.WaitGroup
	var mu sync.Mutex
	inside := map[string]int{}
	for i := range 200 {
		wg.Go(func() {
			id := fmt.Sprintf("v%d", i%10)
			unlock, err := s.Lock(context.Background(), id)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside[id]++
			if inside[id] != 1 {
				t.Errorf("two holders of the lock of %s", id)
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside[id]--
			mu.Unlock()
			unlock()
			unlock() // idempotent
		})
	}
	wg.Wait()
	if n := s.locks.size(); n != 0 {
		t.Fatalf("lock manager holds %d entries after all unlocks", n)
	}
	unlock, _ := s.Lock(context.Background(), "busy")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx, "busy"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock of a busy volume = %v", err)
	}
	unlock()
	if n := s.locks.size(); n != 0 {
		t.Fatalf("lock manager holds %d entries after a cancelled wait", n)
	}
}

func TestStore(t *testing.T) {
	s := NewStore()
	s.Put(held(ModeSingleNode, "a"))
	r, ok, _ := s.Get(context.Background(), "pvc-1")
	if !ok || !r.HeldBy("a") {
		t.Fatalf("get = %+v %v", r, ok)
	}
	r.Holders[0].Node = "mutated"
	if again, _, _ := s.Get(context.Background(), "pvc-1"); !again.HeldBy("a") {
		t.Fatal("Get returned shared state")
	}
	if got := s.HeldBy("a"); len(got) != 1 {
		t.Fatalf("HeldBy = %v", got)
	}
	s.Put(Record{VolumeID: "pvc-1"})
	if s.Len() != 0 {
		t.Fatal("a released volume stayed in the store")
	}
}

package attachment

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func fenceValue(hosts []string) string {
	switch len(hosts) {
	case 0:
		return "nobody"
	case 1:
		return hosts[0]
	}
	return ""
}

func TestReconcileDiskMissingAndOpenOrphans(t *testing.T) {
	ann, _ := Annotations(held(ModeSingleNode, "a"))
	pv := pvWith("pvc-1", map[string]string{AnnotationAttachment: *ann[AnnotationAttachment]})
	res := Reconcile(Observed{
		PVs:      []*corev1.PersistentVolume{pv},
		Attached: map[string][]string{"pv-1": {"a"}},
		Fences:   map[string]string{"pvc-orphan": "", "pvc-closed": "nobody"},
	}, fenceValue)
	kinds := map[string]string{}
	for _, d := range res.Drifts {
		kinds[d.VolumeID] += d.Kind
	}
	if kinds["pvc-1"] != DriftDiskMissing || kinds["pvc-orphan"] != DriftFence || kinds["pvc-closed"] != "" {
		t.Fatalf("drifts = %v", kinds)
	}
	if hosts, ok := res.FenceFixes["pvc-orphan"]; !ok || len(hosts) != 0 {
		t.Fatalf("the open orphan disk is not closed: %v", res.FenceFixes)
	}
	if len(res.Records) != 1 || !res.Records[0].HeldBy("a") {
		t.Fatalf("records = %+v", res.Records)
	}
	// Fence off: nothing compared.
	if res := Reconcile(Observed{PVs: []*corev1.PersistentVolume{pv}, Attached: map[string][]string{"pv-1": {"a"}}}, fenceValue); len(res.Drifts) != 0 {
		t.Fatalf("fence off: drifts %v", res.Drifts)
	}
}

func TestReconcileAdoptsOnlyUnambiguousAttachments(t *testing.T) {
	nqn := map[string]string{"a": "nqn-a", "b": "nqn-b"}
	cases := []struct {
		name        string
		attached    []string
		fence       string
		nqns        map[string]string
		wantHolder  string
		quarantined bool
	}{
		{"one attachment", []string{"a"}, "nobody", nqn, "a", false},
		{"two attachments, the fence names one", []string{"a", "b"}, "nqn-b", nqn, "b", false},
		{"two attachments, open fence", []string{"a", "b"}, "", nqn, "", true},
		{"attached node without host NQN", []string{"a"}, "nobody", map[string]string{}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Reconcile(Observed{PVs: []*corev1.PersistentVolume{pvWith("pvc-1", nil)},
				Attached: map[string][]string{"pv-1": c.attached}, Fences: map[string]string{"pvc-1": c.fence}, HostNQNs: c.nqns}, fenceValue)
			if len(res.Records) != 1 {
				t.Fatalf("records = %+v", res.Records)
			}
			r := res.Records[0]
			if (r.Quarantined != "") != c.quarantined || strings.Join(r.Nodes(), ",") != c.wantHolder {
				t.Fatalf("record = %+v", r)
			}
			if len(r.Holders) > 1 {
				t.Fatal("two holders adopted")
			}
		})
	}
}

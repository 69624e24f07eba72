package webhook

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// FuzzDecide feeds arbitrary Pod and VMI JSON to every decision: none may
// panic, and a denial always carries a message.
func FuzzDecide(f *testing.F) {
	f.Add([]byte(`{"metadata":{"namespace":"ns","name":"p"},"spec":{"nodeName":"b","volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"data"}}]}}`), "b")
	f.Add([]byte(`{"metadata":{"namespace":"ns","labels":{"kubevirt.io/migrationJobUID":"mig-uid","kubevirt.io/created-by":"vmi-uid"}},"spec":{"volumes":[{"name":"disk","persistentVolumeClaim":{"claimName":"disk"}}],"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"Gt","values":["x"]}]}]}}}}}`), "c")
	f.Add([]byte(`{"spec":{"volumes":[{"name":"e","ephemeral":{}}],"nodeSelector":{"":""}}}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, node string) {
		w := newWorld().node("a", nil).node("b", nil).volume("data", false, false, "a").volume("disk", true, true, "a")
		var p corev1.Pod
		if json.Unmarshal(raw, &p) == nil {
			for _, d := range []Decision{DecidePodOnNode(&p, node, DefaultKubeVirtUser, w, opts), DecidePodUnscheduled(&p, DefaultKubeVirtUser, w, opts), DecideBinding(&p, node, w, opts)} {
				if !d.Allowed && d.Message == "" {
					t.Fatalf("denial without a message: %+v", d)
				}
			}
		}
		var v kubevirtv1.VirtualMachineInstance
		if json.Unmarshal(raw, &v) == nil {
			if d := DecideVMI(&v, w, opts); !d.Allowed && d.Message == "" {
				t.Fatalf("denial without a message: %+v", d)
			}
		}
	})
}

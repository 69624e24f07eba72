package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/csi"
)

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	return s
}()

// manifest decodes every document of manifests/base/<file> into objects
// made by newObj (one per document).
func (e *Env) manifest(file string, newObj func() client.Object) ([]client.Object, error) {
	raw, err := os.ReadFile(filepath.Join(e.Root, "manifests", "base", file))
	if err != nil {
		return nil, err
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var out []client.Object
	for {
		o := newObj()
		if err := dec.Decode(o); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("manifests/base/%s: %w", file, err)
		}
		if o.GetName() != "" {
			out = append(out, o)
		}
	}
}

// applyObjects creates the driver's namespace, CSIDriver and
// StorageClasses exactly as manifests/base ships them.
func (e *Env) applyObjects(ctx context.Context) error {
	var objs []client.Object
	for _, m := range []struct {
		file string
		obj  func() client.Object
	}{
		{"namespace.yaml", func() client.Object { return &corev1.Namespace{} }},
		{"csidriver.yaml", func() client.Object { return &storagev1.CSIDriver{} }},
		{"storageclasses.yaml", func() client.Object { return &storagev1.StorageClass{} }},
	} {
		got, err := e.manifest(m.file, m.obj)
		if err != nil {
			return err
		}
		objs = append(objs, got...)
	}
	for _, o := range objs {
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	e.say("objects: namespace rds-fence, CSIDriver %s (attachRequired), StorageClasses rds-fence, rds-fence-block, rds-fence-block-rwx", csi.DefaultDriverName)
	return nil
}

// startWebhook runs the webhook on loopback and registers the shipped
// configuration pointed at it; ready once the API server calls it.
func (e *Env) startWebhook(ctx context.Context) error {
	wh, err := e.start("webhook", "rds-fence", "webhook", "--kubeconfig="+e.Kubeconfig, "--host=127.0.0.1",
		"--port="+strconv.Itoa(e.ports["webhook"]), "--cert-ip=127.0.0.1", "--cert-dir="+filepath.Join(e.Dir, "webhook"),
		"--leader-elect=false", "--metrics-address=0", "--health-address="+e.addr("webhook-health"),
		"--mode="+e.WebhookMode, "--kubevirt=false", "--namespace=rds-fence")
	if err != nil {
		return err
	}
	vwcs, err := e.manifest("webhook-configuration.yaml", func() client.Object { return &admissionregistrationv1.ValidatingWebhookConfiguration{} })
	if err != nil {
		return err
	}
	for _, o := range vwcs {
		vwc := o.(*admissionregistrationv1.ValidatingWebhookConfiguration)
		for i := range vwc.Webhooks {
			cc := &vwc.Webhooks[i].ClientConfig
			u := "https://" + e.addr("webhook") + *cc.Service.Path
			cc.URL, cc.Service = &u, nil
		}
		if err := e.Client.Create(ctx, vwc); err != nil {
			return err
		}
	}
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "webhook-probe-", Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{NodeName: "nowhere", Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "probe"}}}}}}
	if err := waitFor(ctx, wh, "the API server calls the webhook", 60*time.Second, func(ctx context.Context) error {
		// a dry-run pod on a claim: admitted (no such claim) only once the
		// webhook answers with a valid certificate and synced caches
		return e.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
	}); err != nil {
		return err
	}
	e.say("webhook: %s mode at https://%s, registered as ValidatingWebhookConfiguration rds-fence-webhook", e.WebhookMode, e.addr("webhook"))
	return nil
}

// NodeSocket is a node plugin's CSI endpoint.
func (e *Env) NodeSocket(node string) string { return filepath.Join(e.Dir, "nodes", node, "csi.sock") }

// startNode registers a simulated node: the Node object (schedulable, as
// a kubelet would make it), its node plugin on the loop transport, the
// CSINode the registrar would write, and the kubelet stand-in.
func (e *Env) startNode(ctx, runCtx context.Context, name string) error {
	dir := filepath.Join(e.Dir, "nodes", name)
	for _, d := range []string{"host", "state", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		corev1.LabelHostname: name, csi.DefaultTopologyKey: "rds"},
		Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}}
	if err := e.Client.Create(ctx, node); err != nil {
		return err
	}
	if err := e.nodeReady(ctx, name); err != nil {
		return err
	}
	plugin, err := e.start(name, "rds-fence", "node", "--kubeconfig="+e.Kubeconfig, "--node-name="+name, "--transport=loop",
		"--endpoint=unix://"+e.NodeSocket(name), "--host-root="+filepath.Join(dir, "host"), "--state-dir="+filepath.Join(dir, "state"),
		"--metrics-address=0", "--topology-value=rds")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, plugin, "node plugin "+name+" serves CSI", 30*time.Second, exists(e.NodeSocket(name))); err != nil {
		return err
	}
	if err := waitFor(ctx, plugin, "node "+name+" publishes its host NQN", 30*time.Second, func(ctx context.Context) error {
		var n corev1.Node
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			return err
		}
		if n.Annotations["rds-fence.csi.dev/host-nqn"] == "" {
			return errors.New("no host NQN annotation yet")
		}
		return nil
	}); err != nil {
		return err
	}
	csiNode := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: csi.DefaultDriverName, NodeID: name, TopologyKeys: []string{csi.DefaultTopologyKey}}}}}
	if err := e.Client.Create(ctx, csiNode); err != nil {
		return err
	}
	k, err := newKubelet(e, name, filepath.Join(dir, "kubelet"))
	if err != nil {
		return err
	}
	e.Kubelets[name] = k
	e.running.Add(1)
	go func() {
		defer e.running.Done()
		k.Run(runCtx)
	}()
	e.say("node %s: Node, CSINode, node plugin (loop transport), kubelet stand-in", name)
	return nil
}

// nodeReady gives the Node what the scheduler needs (allocatable pods, a
// Ready condition) and removes the not-ready taint admission added; no
// node-lifecycle controller runs, so nothing puts it back.
func (e *Env) nodeReady(ctx context.Context, name string) error {
	var n corev1.Node
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
		return err
	}
	res := corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
	n.Status.Capacity, n.Status.Allocatable = res, res
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletStandIn",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := e.Client.Status().Update(ctx, &n); err != nil {
		return err
	}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
		return err
	}
	var keep []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			keep = append(keep, t)
		}
	}
	n.Spec.Taints = keep
	return e.Client.Update(ctx, &n)
}

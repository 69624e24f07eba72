package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configure the environment.
type Options struct {
	// Dir holds the environment's state, keys, logs, mounts and the
	// simulated RDS's files (created; reused runs start from scratch).
	Dir string
	// Bin holds the binaries: etcd, kube-*, csi-provisioner, csi-attacher, rds-fence.
	Bin string
	// Root is the repository (manifests/ is read from it).
	Root string
	// Nodes are the simulated nodes (default node-a, node-b).
	Nodes []string
	// WebhookMode: enforce (default), warn or dry-run.
	WebhookMode string
	// Out receives progress lines (nil: discarded).
	Out io.Writer
}

// Env is a running local environment.
type Env struct {
	Options
	// Kubeconfig is the admin kubeconfig's path.
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	Clientset  kubernetes.Interface
	// Kubelets are the nodes' stand-ins for the kubelet, by node name.
	Kubelets map[string]*Kubelet
	// ReadyIn: how long Start took.
	ReadyIn time.Duration

	pki     *pki
	procs   []*proc
	ports   map[string]int
	cancel  context.CancelFunc
	running sync.WaitGroup // the kubelet stand-ins' loops
}

func (e *Env) say(format string, args ...any) {
	if e.Out != nil {
		_, _ = fmt.Fprintf(e.Out, format+"\n", args...)
	}
}

func (e *Env) addr(name string) string { return "127.0.0.1:" + strconv.Itoa(e.ports[name]) }

// Start brings the environment up. On error everything started so far is
// stopped again.
func Start(ctx context.Context, o Options) (*Env, error) {
	begin := time.Now()
	if len(o.Nodes) == 0 {
		o.Nodes = []string{"node-a", "node-b"}
	}
	if o.WebhookMode == "" {
		o.WebhookMode = "enforce"
	}
	e := &Env{Options: o, Kubelets: map[string]*Kubelet{}, ports: map[string]int{}}
	if err := e.prepare(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if err := e.startAll(ctx, runCtx); err != nil {
		e.Stop()
		return nil, err
	}
	e.ReadyIn = time.Since(begin)
	return e, nil
}

// prepare checks the binaries, clears Dir and allocates ports and keys.
func (e *Env) prepare() error {
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "csi-provisioner", "csi-attacher", "rds-fence"} {
		if _, err := os.Stat(filepath.Join(e.Bin, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing in %s: %s (run `make local-cluster build`)", e.Bin, strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		return errors.New("the local environment needs root: the node plugins attach loop devices and mount file systems")
	}
	if err := claimDir(e.Dir); err != nil {
		return err
	}
	cleanupDir(e.Dir) // what an earlier run may have left mounted or attached
	if err := os.RemoveAll(e.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(e.Dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.Dir, dirMarker), []byte("rds-fence local environment; removed and recreated by each start\n"), 0o600); err != nil {
		return err
	}
	for _, d := range []string{"logs", "etcd", "rds", "controller", "webhook", "flex"} {
		if err := os.MkdirAll(filepath.Join(e.Dir, d), 0o700); err != nil {
			return err
		}
	}
	for _, n := range []string{"etcd", "etcd-peer", "apiserver", "webhook", "webhook-health", "controller-health", "rds-ssh", "rds-fabric"} {
		p, err := freePort()
		if err != nil {
			return err
		}
		e.ports[n] = p
	}
	var err error
	e.pki, err = newPKI(filepath.Join(e.Dir, "pki"))
	return err
}

func (e *Env) startAll(ctx, runCtx context.Context) error {
	etcd, err := e.start("etcd", "etcd", "--name=dev", "--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls=http://"+e.addr("etcd"), "--advertise-client-urls=http://"+e.addr("etcd"),
		"--listen-peer-urls=http://"+e.addr("etcd-peer"), "--initial-advertise-peer-urls=http://"+e.addr("etcd-peer"),
		"--initial-cluster=dev=http://"+e.addr("etcd-peer"), "--unsafe-no-fsync", "--quota-backend-bytes=1073741824")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, etcd, "etcd listens", 30*time.Second, listening(e.addr("etcd"))); err != nil {
		return err
	}
	api, err := e.start("kube-apiserver", "kube-apiserver", "--etcd-servers=http://"+e.addr("etcd"),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(e.ports["apiserver"]),
		"--endpoint-reconciler-type=none", "--tls-cert-file="+e.pki.apiCert, "--tls-private-key-file="+e.pki.apiKey,
		"--client-ca-file="+e.pki.caCert, "--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+e.pki.saPub, "--service-account-signing-key-file="+e.pki.saKey,
		"--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC", "--cert-dir="+filepath.Join(e.Dir, "apiserver-certs"))
	if err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	kc, err := e.pki.kubeconfig("https://" + e.addr("apiserver"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(e.Kubeconfig, []byte(kc), 0o600); err != nil {
		return err
	}
	if e.Config, err = clientcmd.BuildConfigFromFlags("", e.Kubeconfig); err != nil {
		return err
	}
	e.Config.QPS, e.Config.Burst = 100, 200
	if e.Clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return err
	}
	if err := waitFor(ctx, api, "the API server is ready", 90*time.Second, func(ctx context.Context) error {
		_, err := e.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	e.say("control plane: API server ready at https://%s", e.addr("apiserver"))
	if _, err := e.start("kube-controller-manager", "kube-controller-manager", "--kubeconfig="+e.Kubeconfig,
		"--controllers=attachdetach,persistentvolume-binder,serviceaccount,pv-protection,pvc-protection,garbagecollector,podgc",
		"--use-service-account-credentials=false", "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--flex-volume-plugin-dir="+filepath.Join(e.Dir, "flex")); err != nil {
		return err
	}
	if _, err := e.start("kube-scheduler", "kube-scheduler", "--kubeconfig="+e.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0"); err != nil {
		return err
	}
	if err := e.applyObjects(ctx); err != nil {
		return err
	}
	if err := e.startRDS(ctx); err != nil {
		return err
	}
	if err := e.startController(ctx); err != nil {
		return err
	}
	if err := e.startWebhook(ctx); err != nil {
		return err
	}
	for _, n := range e.Nodes {
		if err := e.startNode(ctx, runCtx, n); err != nil {
			return err
		}
	}
	return e.startSidecars(ctx)
}

func (e *Env) startRDS(ctx context.Context) error {
	sim, err := e.start("rds-sim", "rds-fence", "rds-sim", "--listen="+e.addr("rds-ssh"), "--fabric-listen="+e.addr("rds-fabric"),
		"--root="+filepath.Join(e.Dir, "rds"), "--host-key="+e.pki.rdsHostKey, "--authorized-keys="+e.pki.rdsAuthorizedKeys,
		"--pool-size=17179869184")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, sim, "the RDS simulator listens", 30*time.Second, listening(e.addr("rds-ssh"))); err != nil {
		return err
	}
	e.say("RDS simulator: SSH %s, NVMe/TCP stand-in %s", e.addr("rds-ssh"), e.addr("rds-fabric"))
	return nil
}

// ControllerSocket is the CSI controller's endpoint.
func (e *Env) ControllerSocket() string { return filepath.Join(e.Dir, "controller", "csi.sock") }

func (e *Env) startController(ctx context.Context) error {
	ctl, err := e.start("controller", "rds-fence", "controller", "--kubeconfig="+e.Kubeconfig, "--endpoint=unix://"+e.ControllerSocket(),
		"--rds-address="+e.addr("rds-ssh"), "--rds-key-file="+e.pki.rdsClientKey, "--rds-host-key="+strings.TrimSpace(e.pki.hostPub),
		"--target-address=127.0.0.1", "--target-port="+strconv.Itoa(e.ports["rds-fabric"]), "--leader-elect=false",
		"--metrics-address=0", "--health-address="+e.addr("controller-health"), "--node-sweep-interval=5s")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, ctl, "the controller serves CSI", 60*time.Second, exists(e.ControllerSocket())); err != nil {
		return err
	}
	e.say("controller: CSI controller, fencing core and reconciler serving on %s", e.ControllerSocket())
	return nil
}

func (e *Env) startSidecars(ctx context.Context) error {
	sock := "--csi-address=" + e.ControllerSocket()
	if _, err := e.start("csi-provisioner", "csi-provisioner", sock, "--kubeconfig="+e.Kubeconfig, "--leader-election=false",
		"--extra-create-metadata", "--feature-gates=Topology=true", "--timeout=60s", "--retry-interval-start=500ms", "-v=2"); err != nil {
		return err
	}
	if _, err := e.start("csi-attacher", "csi-attacher", sock, "--kubeconfig="+e.Kubeconfig, "--leader-election=false",
		"--timeout=30s", "--retry-interval-start=500ms", "--retry-interval-max=10s", "-v=2"); err != nil {
		return err
	}
	e.say("sidecars: external-provisioner and external-attacher")
	return nil
}

// Log returns the log file of a process by name ("controller", "node-a",
// "kubelet-node-a", ...).
func (e *Env) Log(name string) string { return filepath.Join(e.Dir, "logs", name+".log") }

// dirMarker marks a directory as the environment's: Start clears only
// an empty directory or one with this file.
const dirMarker = ".rds-fence-dev"

// claimDir refuses to clear a directory that is not the environment's.
func claimDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, dirMarker)); err != nil {
		return fmt.Errorf("%s is not empty and is not a local environment's directory (no %s): refusing to clear it", dir, dirMarker)
	}
	return nil
}

// Stop stops the kubelet stand-ins, has them unpublish and unstage what
// they published (a dead node's file systems were shut down when it
// died, so nothing of it is written), ends every process, and removes
// whatever mount or loop device is still left under Dir. It returns what
// that last safety net had to remove (nothing, when every component
// cleaned up after itself).
func (e *Env) Stop() []string {
	if e.cancel != nil {
		e.cancel()
	}
	e.running.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, k := range e.Kubelets {
		k.Cleanup(ctx)
	}
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop(10 * time.Second)
	}
	return cleanupDir(e.Dir)
}

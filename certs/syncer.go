package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// syncerResync re-checks the files against the Secret this often, which
// also retries a failed write.
const syncerResync = time.Minute

// Syncer copies tls.crt and tls.key of the Secret into a directory (the
// webhook server's CertDir) whenever they change and form a valid,
// unexpired key pair, replacing both files at once (see writeFiles). It
// runs on every replica, in both modes, and watches only the one Secret
// (field selector on metadata.name), so nothing else is cached. A deleted
// or unusable Secret leaves the files as they are.
type Syncer struct {
	cs     kubernetes.Interface
	o      Options
	dir    string
	log    logr.Logger
	synced chan struct{}
	once   sync.Once
}

var _ manager.LeaderElectionRunnable = (*Syncer)(nil)
var _ manager.Runnable = (*Syncer)(nil)

// NewSyncer returns a Syncer of o's Secret into dir. RBAC: get, list,
// watch on that Secret (resourceNames may restrict list and watch, since
// they carry the metadata.name field selector).
func NewSyncer(cs kubernetes.Interface, o Options, dir string, log logr.Logger) (*Syncer, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("certificate directory not set")
	}
	o = o.Defaulted()
	return &Syncer{cs: cs, o: o, dir: dir, synced: make(chan struct{}),
		log: log.WithValues(logSecret, o.secretRef(), logDir, dir)}, nil
}

// NeedLeaderElection is false: every replica serves, so every replica syncs.
func (s *Syncer) NeedLeaderElection() bool { return false }

// Start watches the Secret until ctx ends; it returns nil then.
func (s *Syncer) Start(ctx context.Context) error {
	secrets := s.cs.CoreV1().Secrets(s.o.Namespace)
	only := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.o.SecretName).String()
	}
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			only(&o)
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			only(&o)
			return secrets.Watch(ctx, o)
		},
	}
	_, informer := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Secret{},
		ResyncPeriod:  syncerResync,
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.sync(obj) },
			UpdateFunc: func(_, obj any) { s.sync(obj) },
			DeleteFunc: func(any) { s.log.Info("secret deleted; keeping the certificate files") },
		},
	})
	s.log.Info("syncing webhook serving certificate")
	informer.RunWithContext(ctx)
	return nil
}

// WaitForFirstSync blocks until the directory holds the Secret's key pair
// (written or found there), or ctx ends (returning its error). Start the
// webhook server after it: certwatcher fails on missing files.
func (s *Syncer) WaitForFirstSync(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for secret %s to be written to %s: %w", s.o.secretRef(), s.dir, ctx.Err())
	}
}

// AfterFirstSync wraps r (typically the webhook server) so that it starts
// once WaitForFirstSync returns, on every replica (no leader election).
// Add the wrapper to the manager instead of r; r then must not be the
// manager's own webhook server (do not call mgr.GetWebhookServer, which
// adds it to be started before anything else).
func (s *Syncer) AfterFirstSync(r manager.Runnable) manager.Runnable {
	return afterFirstSync{s: s, r: r}
}

type afterFirstSync struct {
	s *Syncer
	r manager.Runnable
}

var _ manager.LeaderElectionRunnable = afterFirstSync{}

func (a afterFirstSync) NeedLeaderElection() bool { return false }

func (a afterFirstSync) Start(ctx context.Context) error {
	if err := a.s.WaitForFirstSync(ctx); err != nil {
		return nil // stopping before the first sync
	}
	return a.r.Start(ctx)
}

func (s *Syncer) sync(obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	crt, key := secret.Data[KeyCert], secret.Data[KeyKey]
	pair, err := tls.X509KeyPair(crt, key)
	var cert *x509.Certificate
	if err == nil {
		cert, err = leaf(pair)
	}
	if err != nil {
		s.log.Info("secret holds no usable key pair; keeping the certificate files", logReason, err.Error())
		return
	}
	if now := s.o.Clock.Now(); !now.Before(cert.NotAfter) {
		s.log.Info("secret holds an expired certificate; keeping the certificate files",
			logSerial, cert.SerialNumber.Text(16), logNotAfter, cert.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	if s.onDisk(crt, key) {
		s.once.Do(func() { close(s.synced) })
		return
	}
	if err := writeFiles(s.dir, map[string][]byte{KeyCert: crt, KeyKey: key}); err != nil {
		s.log.Error(err, "writing the certificate files failed; retrying at the next resync", logRetryIn, syncerResync.String())
		return
	}
	s.log.Info("serving certificate written", logSerial, cert.SerialNumber.Text(16),
		logNotAfter, cert.NotAfter.UTC().Format(time.RFC3339), logRV, secret.ResourceVersion)
	s.once.Do(func() { close(s.synced) })
}

func (s *Syncer) onDisk(crt, key []byte) bool {
	c, err1 := os.ReadFile(filepath.Join(s.dir, KeyCert))
	k, err2 := os.ReadFile(filepath.Join(s.dir, KeyKey))
	return err1 == nil && err2 == nil && bytes.Equal(c, crt) && bytes.Equal(k, key)
}

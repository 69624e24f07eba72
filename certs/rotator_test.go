package certs

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// rotatorFixture is a namespace with a ValidatingWebhookConfiguration of
// two webhooks that no request reaches, and a Rotator for them.
type rotatorFixture struct {
	c    client.Client
	o    Options
	logs *logs
	r    *Rotator
}

func newRotatorFixture(t *testing.T) *rotatorFixture {
	t.Helper()
	c := newClient(t)
	ns := newNamespace(t, c)
	vwc := webhookConfig(ns, "https://127.0.0.1:1/never", ns+"-no-such-namespace", 2, admissionregistrationv1.Ignore)
	if err := c.Create(t.Context(), vwc); err != nil {
		t.Fatal(err)
	}
	f := &rotatorFixture{c: c, logs: &logs{},
		o: Options{Namespace: ns, WebhookConfigName: ns, IPs: []net.IP{net.ParseIP("127.0.0.1")}}}
	r, err := NewRotator(c, f.o, f.logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

func (f *rotatorFixture) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := f.c.Get(t.Context(), types.NamespacedName{Namespace: f.o.Namespace, Name: DefaultSecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func (f *rotatorFixture) vwc(t *testing.T) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := f.c.Get(t.Context(), types.NamespacedName{Name: f.o.WebhookConfigName}, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// assertInstalled checks the Secret is complete and stable, and every
// webhook trusts its CA bundle.
func (f *rotatorFixture) assertInstalled(t *testing.T) *corev1.Secret {
	t.Helper()
	s := f.secret(t)
	if s.Type != corev1.SecretTypeTLS {
		t.Fatalf("secret type %q", s.Type)
	}
	assertConsistent(t, s.Data, f.o.Defaulted(), 1)
	for _, w := range f.vwc(t).Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, s.Data[KeyCA]) {
			t.Fatalf("webhook %s: caBundle is not the Secret's ca.crt", w.Name)
		}
	}
	return s
}

func TestRotator(t *testing.T) {
	f := newRotatorFixture(t)
	ctx := t.Context()
	if err := f.r.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	first := f.assertInstalled(t)
	vwcRV := f.vwc(t).ResourceVersion

	t.Run("second run is a no-op", func(t *testing.T) {
		if err := f.r.Rotate(ctx, false); err != nil {
			t.Fatal(err)
		}
		if s := f.secret(t); s.ResourceVersion != first.ResourceVersion {
			t.Fatalf("secret updated: resourceVersion %s -> %s", first.ResourceVersion, s.ResourceVersion)
		}
		if rv := f.vwc(t).ResourceVersion; rv != vwcRV {
			t.Fatalf("webhook configuration updated: resourceVersion %s -> %s", vwcRV, rv)
		}
	})

	t.Run("forced rotation keeps the CA", func(t *testing.T) {
		if err := f.r.Rotate(ctx, true); err != nil {
			t.Fatal(err)
		}
		s := f.assertInstalled(t)
		if bytes.Equal(s.Data[KeyCert], first.Data[KeyCert]) || bytes.Equal(s.Data[KeyKey], first.Data[KeyKey]) {
			t.Fatal("forced rotation kept the serving certificate")
		}
		if !bytes.Equal(s.Data[KeyCA], first.Data[KeyCA]) || !bytes.Equal(s.Data[KeyCAKey], first.Data[KeyCAKey]) {
			t.Fatal("forced rotation changed the CA")
		}
		if rv := f.vwc(t).ResourceVersion; rv != vwcRV {
			t.Fatalf("forced rotation patched the webhook configuration: resourceVersion %s -> %s", vwcRV, rv)
		}
	})

	t.Run("mismatched key regenerated, reason logged", func(t *testing.T) {
		s := f.secret(t)
		s.Data[KeyKey] = first.Data[KeyKey] // the key of an earlier certificate
		if err := f.c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := f.r.Rotate(ctx, false); err != nil {
			t.Fatal(err)
		}
		f.assertInstalled(t)
		if f.logs.count("tls.key does not match tls.crt") != 1 {
			t.Fatalf("reason not logged once:\n%s", f.logs)
		}
	})

	t.Run("cleared caBundle restored", func(t *testing.T) {
		v := f.vwc(t)
		v.Webhooks[1].ClientConfig.CABundle = nil
		if err := f.c.Update(ctx, v); err != nil {
			t.Fatal(err)
		}
		rv := f.secret(t).ResourceVersion
		if err := f.r.Rotate(ctx, false); err != nil {
			t.Fatal(err)
		}
		if f.assertInstalled(t).ResourceVersion != rv {
			t.Fatal("secret rewritten to restore a caBundle")
		}
	})
}

// TestRotatorsRaceOnCreate lets two Rotators both find no Secret before
// either creates it: one creates, the other re-reads and keeps it.
func TestRotatorsRaceOnCreate(t *testing.T) {
	f := newRotatorFixture(t)
	var bothRead sync.WaitGroup
	bothRead.Add(2)
	rotators := make([]*Rotator, 2)
	logs := []*logs{{}, {}}
	for i := range rotators {
		var once sync.Once
		c := interceptor.NewClient(newWatchClient(t), interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				err := c.Get(ctx, key, obj, opts...)
				if _, ok := obj.(*corev1.Secret); ok {
					once.Do(func() { bothRead.Done(); bothRead.Wait() })
				}
				return err
			},
		})
		r, err := NewRotator(c, f.o, logs[i].logger())
		if err != nil {
			t.Fatal(err)
		}
		rotators[i] = r
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range rotators {
		wg.Go(func() { errs[i] = r.Rotate(t.Context(), false) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rotator %d: %v", i, err)
		}
	}
	if n := logs[0].count("webhook certificates rotated") + logs[1].count("webhook certificates rotated"); n != 1 {
		t.Fatalf("%d writes of the Secret, want 1:\n%s\n%s", n, logs[0], logs[1])
	}
	f.assertInstalled(t)
}

func TestRotatorErrors(t *testing.T) {
	t.Run("missing webhook configuration: secret written, precise error", func(t *testing.T) {
		f := newRotatorFixture(t)
		if err := f.c.Delete(t.Context(), f.vwc(t)); err != nil {
			t.Fatal(err)
		}
		err := f.r.Rotate(t.Context(), false)
		want := "ValidatingWebhookConfiguration " + f.o.WebhookConfigName + ": not found"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("Rotate = %v, want %q...", err, want)
		}
		assertConsistent(t, f.secret(t).Data, f.o.Defaulted(), 1)
	})
	t.Run("secret issued by cert-manager is left alone", func(t *testing.T) {
		f := newRotatorFixture(t)
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.o.Namespace, Name: DefaultSecretName,
			Annotations: map[string]string{certManagerAnnotation: "rds-fence-webhook"}}}
		if err := f.c.Create(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		err := f.r.Rotate(t.Context(), false)
		want := `secret ` + f.o.Namespace + `/rds-fence-webhook-tls: issued by cert-manager Certificate "rds-fence-webhook"`
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("Rotate = %v, want %q...", err, want)
		}
		if len(f.secret(t).Data) != 0 {
			t.Fatal("secret written")
		}
	})
}

func TestRotatorStart(t *testing.T) {
	f := newRotatorFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.r.Start(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.logs.count("webhook CA bundle patched") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation within 10s:\n%s", f.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start = %v", err)
	}
	f.assertInstalled(t)
}

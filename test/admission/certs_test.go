package admission

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// servedSerial is the serial of the certificate the webhook presents,
// verified against roots.
func servedSerial(t testing.TB, roots *x509.CertPool) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the webhook: %v", err)
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestSelfSignedCertificates: the CA in the Secret is the caBundle of
// every webhook, the API server trusts the served certificate, and a
// forced rotation is picked up by the running server while admissions
// continue, none failing.
func TestSelfSignedCertificates(t *testing.T) {
	var secret corev1.Secret
	if err := direct.Get(t.Context(), client.ObjectKey{Namespace: webhookNamespace, Name: "rds-fence-webhook-tls"}, &secret); err != nil {
		t.Fatal(err)
	}
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := direct.Get(t.Context(), client.ObjectKey{Name: "rds-fence-webhook"}, &vwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range vwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, secret.Data["ca.crt"]) {
			t.Fatalf("webhook %s caBundle differs from the Secret's ca.crt", w.Name)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data["ca.crt"]) {
		t.Fatal("ca.crt holds no certificate")
	}
	before := servedSerial(t, roots)

	f := newFixture(t)
	a := f.node("a", nil)
	f.volume("data", false, a)
	ctx, stop := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				// Admitted (the holder's node), through the webhook, stored nowhere.
				err := direct.Create(ctx, podUsing(f.ns, "on-a", a, "data"), client.DryRunAll)
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	if err := hook.Rotator.Rotate(t.Context(), true); err != nil {
		stop()
		wg.Wait()
		t.Fatalf("forced rotation: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for servedSerial(t, roots).Cmp(before) == 0 {
		if time.Now().After(deadline) {
			stop()
			wg.Wait()
			t.Fatal("the server still presents the old certificate 20s after the rotation")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // admissions on the new certificate
	stop()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d admissions failed during the rotation; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 10 {
		t.Fatalf("only %d admissions during the rotation", ok.Load())
	}
	t.Logf("%d admissions during the rotation, none failed", ok.Load())
}

package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const denial = "refused by the certs test webhook"

// TestWebhookTrustedAndHotReloaded runs the whole self-signed path against
// the real apiserver, wired into a controller-runtime manager with leader
// election as package doc describes: the Rotator (leader) issues the
// certificates and installs the CA bundle, the Syncer writes the files,
// the webhook server starts after the first sync and the apiserver calls
// it (failurePolicy Fail). Forced rotations while ConfigMaps are being
// created fail none of them, and after each the server presents the new
// certificate without a restart.
func TestWebhookTrustedAndHotReloaded(t *testing.T) {
	c := newClient(t)
	ctx := t.Context()
	ns := newNamespace(t, c)
	port := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d/validate", port)
	if err := c.Create(ctx, webhookConfig(ns, url, ns, 1, admissionregistrationv1.Fail)); err != nil {
		t.Fatal(err)
	}
	o := Options{Namespace: ns, WebhookConfigName: ns, IPs: []net.IP{net.ParseIP("127.0.0.1")}}
	logs := &logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})

	mgr, err := manager.New(startEnv(t), manager.Options{Scheme: testScheme(t),
		Metrics:        metricsserver.Options{BindAddress: "0"},
		LeaderElection: true, LeaderElectionID: "certs-test", LeaderElectionNamespace: ns,
		LeaderElectionReleaseOnCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := NewRotator(c, o, logs.logger().WithName("rotator"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	syncer, err := NewSyncer(kubernetes.NewForConfigOrDie(mgr.GetConfig()), o, dir, logs.logger().WithName("syncer"))
	if err != nil {
		t.Fatal(err)
	}
	var admitted atomic.Int64
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir})
	srv.Register("/validate", &admission.Webhook{Handler: admission.HandlerFunc(
		func(_ context.Context, req admission.Request) admission.Response {
			admitted.Add(1)
			if req.Name == "denied" {
				return admission.Denied(denial)
			}
			return admission.Allowed("")
		})})
	for _, r := range []manager.Runnable{rot, syncer, syncer.AfterFirstSync(srv)} {
		if err := mgr.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-stopped; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := syncer.WaitForFirstSync(waitCtx); err != nil {
		t.Fatal(err)
	}
	if err := ReadyCheck(dir, nil)(nil); err != nil {
		t.Fatalf("ReadyCheck after the first sync: %v", err)
	}
	eventually(t, 10*time.Second, "webhook server started", func() error { return srv.StartedChecker()(nil) })

	// The apiserver learns the configuration (and its caBundle) from a watch:
	// wait until a dry-run create comes back with the handler's denial.
	eventually(t, 15*time.Second, "apiserver calls the webhook", func() error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "denied", Namespace: ns}}
		err := c.Create(ctx, cm, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), denial) {
			return fmt.Errorf("create returned %v", err)
		}
		return nil
	})
	seen := admitted.Load()
	if err := c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "allowed", Namespace: ns}}); err != nil {
		t.Fatalf("create through the webhook: %v", err)
	}
	if admitted.Load() <= seen {
		t.Fatal("ConfigMap created without the webhook seeing it")
	}

	// Forced rotations under continuous load.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secretData(t, c, o)[KeyCA])
	oldSerial := servedSerial(t, port, roots)
	var creates, failures atomic.Int64
	var firstFailure atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	t.Cleanup(func() { stopLoad(); load.Wait() })
	for range 2 {
		load.Go(func() {
			for loadCtx.Err() == nil {
				err := c.Create(loadCtx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "load-", Namespace: ns}})
				switch {
				case err == nil:
					creates.Add(1)
				case loadCtx.Err() == nil:
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	admittedBefore := admitted.Load()
	// Several rotations: the watch must survive the swap of the files.
	for i := range 3 {
		if err := rot.Rotate(ctx, true); err != nil {
			t.Fatal(err)
		}
		newSerial := leafSerial(t, secretData(t, c, o)[KeyCert])
		if newSerial.Cmp(oldSerial) == 0 {
			t.Fatal("forced rotation kept the serial number")
		}
		start := time.Now()
		eventually(t, 15*time.Second, "server presents the new certificate", func() error {
			if got := servedSerial(t, port, roots); got.Cmp(newSerial) != 0 {
				return fmt.Errorf("serial %s, want %s", got.Text(16), newSerial.Text(16))
			}
			return nil
		})
		t.Logf("rotation %d: new certificate served %s after it", i, time.Since(start).Round(time.Millisecond))
		oldSerial = newSerial
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	load.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d creates failed during the rotations; first: %v", n, n+creates.Load(), firstFailure.Load())
	}
	if admitted.Load() <= admittedBefore || creates.Load() < 10 {
		t.Fatalf("load too small to prove anything: %d creates, %d admitted during the rotations",
			creates.Load(), admitted.Load()-admittedBefore)
	}
	t.Logf("%d ConfigMaps created through the webhook during the rotations, none failed", creates.Load())
	if err := ReadyCheck(dir, nil)(nil); err != nil {
		t.Fatalf("ReadyCheck after the rotations: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// servedSerial completes a TLS handshake with the server, verifying it
// against roots, and returns the serial number it presented.
func servedSerial(t *testing.T, port int, roots *x509.CertPool) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func leafSerial(t *testing.T, certPEM []byte) *big.Int {
	t.Helper()
	certs, err := parseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber
}

func secretData(t *testing.T, c client.Client, o Options) map[string][]byte {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: o.Namespace, Name: o.Defaulted().SecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// eventually polls f until it returns nil, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

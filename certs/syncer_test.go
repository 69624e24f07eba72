package certs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// TestSyncerWritesOnlyUsablePairs drives the Syncer's event handler: the
// watch itself is exercised against the apiserver by
// TestWebhookTrustedAndHotReloaded.
func TestSyncerWritesOnlyUsablePairs(t *testing.T) {
	o := testOptions(t0)
	good := validData(t, o)
	other := validData(t, o)
	expired := validData(t, at(o, t0.Add(-4*time.Hour)))
	dir := t.TempDir()
	logs := &logs{}
	s, err := NewSyncer(fake.NewClientset(), o, dir, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		data     map[string][]byte
		wantCert []byte // nil: nothing on disk
		wantLog  string
		synced   bool
	}{
		{"garbage", map[string][]byte{KeyCert: []byte("garbage"), KeyKey: good[KeyKey]}, nil, "secret holds no usable key pair", false},
		{"mismatch", map[string][]byte{KeyCert: good[KeyCert], KeyKey: other[KeyKey]}, nil, "secret holds no usable key pair", false},
		{"expired", expired, nil, "secret holds an expired certificate", false},
		{"valid", good, good[KeyCert], "serving certificate written", true},
		{"unchanged", good, good[KeyCert], "serving certificate written", true},
		{"garbage after valid", map[string][]byte{KeyCert: []byte("garbage")}, good[KeyCert], "secret holds no usable key pair", true},
		{"rotated", other, other[KeyCert], "serving certificate written", true},
	}
	for _, st := range steps {
		s.sync(&corev1.Secret{Data: st.data})
		got, err := os.ReadFile(filepath.Join(dir, KeyCert))
		if st.wantCert == nil && err == nil || st.wantCert != nil && string(got) != string(st.wantCert) {
			t.Fatalf("%s: tls.crt on disk %q (%v)", st.name, got, err)
		}
		if logs.count(st.wantLog) == 0 {
			t.Fatalf("%s: no log %q:\n%s", st.name, st.wantLog, logs)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		if synced := s.WaitForFirstSync(ctx) == nil; synced != st.synced {
			t.Fatalf("%s: synced %v, want %v", st.name, synced, st.synced)
		}
		cancel()
	}
	if n := logs.count("serving certificate written"); n != 2 {
		t.Fatalf("%d writes, want 2 (an unchanged Secret is not rewritten)", n)
	}
}

// TestLeaderElectionGroups pins which runnables the manager starts on
// every replica: a Runnable without NeedLeaderElection would run on the
// leader only.
func TestLeaderElectionGroups(t *testing.T) {
	s, err := NewSyncer(fake.NewClientset(), Options{}, t.TempDir(), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRotator(nil, Options{}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		r    manager.Runnable
		want bool
	}{
		"Syncer":         {s, false},
		"AfterFirstSync": {s.AfterFirstSync(manager.RunnableFunc(func(context.Context) error { return nil })), false},
		"Rotator":        {r, true},
	} {
		le, ok := tc.r.(manager.LeaderElectionRunnable)
		if !ok || le.NeedLeaderElection() != tc.want {
			t.Errorf("%s: LeaderElectionRunnable %v, NeedLeaderElection want %v", name, ok, tc.want)
		}
	}
}

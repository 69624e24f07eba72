// Package certs owns the serving certificate of the validating admission
// webhook: where it comes from, how every replica gets it onto disk, and
// whether a replica may report ready. It does not serve admission requests
// (package webhook) and does not parse flags (package cmd).
//
// Two modes share one Secret (Options.SecretName, default
// rds-fence/rds-fence-webhook-tls, keys tls.crt, tls.key, ca.crt):
//
//   - self-signed (default): the Rotator, on the leader only, keeps a P-256
//     CA (ca.crt, ca.key; 10 years) and a serving certificate (tls.crt,
//     tls.key; 1 year, for the Service's DNS names and Options.IPs) in the
//     Secret and puts ca.crt into the caBundle of every webhook of the
//     ValidatingWebhookConfiguration. Each certificate is renewed once
//     less than a third of its lifetime remains. A due CA gets a successor
//     that joins ca.crt (and so the caBundle) while the old CA stays until
//     it expires; the serving certificate moves to the new CA at its own
//     renewal, so no admission request fails during a CA roll. Anything
//     missing, malformed, mismatched, expired or signed by another CA is
//     regenerated and the reason logged.
//   - cert-manager: cert-manager issues the Secret (manifests/overlays/
//     cert-manager) and its cainjector fills the caBundle; no Rotator runs.
//     CheckCertificate reports whether the Certificate is Ready.
//
// In both modes the Syncer, on every replica, copies tls.crt/tls.key into
// the webhook server's CertDir, both files at once, and the server's
// certwatcher reloads them without a restart. ReadyCheck passes only while
// that directory holds a valid key pair.
//
// Wiring (cmd):
//
//	opts := certs.Options{} // defaults; Validate() before use
//	direct, _ := client.New(mgr.GetConfig(), client.Options{Scheme: scheme}) // uncached: no Secret cache
//	cs := kubernetes.NewForConfigOrDie(mgr.GetConfig())
//	syncer, _ := certs.NewSyncer(cs, opts, certDir, log)
//	srv := webhook.NewServer(webhook.Options{CertDir: certDir, ...}) // not mgr.GetWebhookServer()
//	mgr.Add(syncer)                       // every replica (NeedLeaderElection false)
//	mgr.Add(syncer.AfterFirstSync(srv))   // every replica; srv starts once the files exist
//	if selfSigned { rot, _ := certs.NewRotator(direct, opts, log); mgr.Add(rot) } // leader only
//	mgr.AddReadyzCheck("certificate", certs.ReadyCheck(certDir, nil))
//	mgr.AddReadyzCheck("webhook", srv.StartedChecker())
//	// cert-manager mode, optionally: certs.CheckCertificate(ctx, direct, ns, certs.DefaultCertificateName)
//
// RBAC: the Secret: get, list, watch (every replica) and create, update
// (self-signed leader); the ValidatingWebhookConfiguration: get, patch
// (self-signed leader); certificates.cert-manager.io: get (cert-manager
// mode, when CheckCertificate is used).
//
// It must not log key material, cache Secrets other than its own, or
// write the CA key to disk.
package certs

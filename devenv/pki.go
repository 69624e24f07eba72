package devenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// pki is what the control plane and the RDS simulator need: a CA, the
// API server's serving certificate, an admin client certificate
// (system:masters), the ServiceAccount token key, and SSH keys for the
// controller and the simulated RDS.
type pki struct {
	dir                                    string
	caCert, apiCert, apiKey, adminCert     string
	adminKey, saPub, saKey, rdsClientKey   string
	rdsAuthorizedKeys, rdsHostKey, hostPub string
	hostKey                                ssh.PublicKey
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	return k, der, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// newPKI writes every key and certificate into dir.
func newPKI(dir string) (*pki, error) {
	p := &pki{dir: dir}
	f := func(n string) string { return filepath.Join(dir, n) }
	p.caCert, p.apiCert, p.apiKey, p.adminCert, p.adminKey = f("ca.crt"), f("apiserver.crt"), f("apiserver.key"), f("admin.crt"), f("admin.key")
	p.saPub, p.saKey, p.rdsClientKey, p.rdsAuthorizedKeys, p.rdsHostKey = f("sa.pub"), f("sa.key"), f("rds-client"), f("rds-authorized_keys"), f("rds-host")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, _, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "rds-fence-dev-ca"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	ca, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caParsed, _ := x509.ParseCertificate(ca)
	issue := func(tmpl *x509.Certificate, certPath, keyPath string) error {
		k, der, err := newKey()
		if err != nil {
			return err
		}
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial(), now.Add(-time.Hour), now.Add(365*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		c, err := x509.CreateCertificate(rand.Reader, tmpl, caParsed, k.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", c); err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", der)
	}
	steps := []error{
		writePEM(p.caCert, "CERTIFICATE", ca),
		issue(&x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
			DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}}, p.apiCert, p.apiKey),
		issue(&x509.Certificate{Subject: pkix.Name{CommonName: "kube-admin", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.adminCert, p.adminKey),
	}
	saKey, saDER, err := newKey()
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	steps = append(steps, writePEM(p.saKey, "EC PRIVATE KEY", saDER), writePEM(p.saPub, "PUBLIC KEY", saPubDER))
	for _, e := range steps {
		if e != nil {
			return nil, e
		}
	}
	// SSH: the controller's client key (authorized on the simulator) and
	// the simulator's host key (pinned by the controller).
	clientPub, err := sshKey(p.rdsClientKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.rdsAuthorizedKeys, ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		return nil, err
	}
	hostPub, err := sshKey(p.rdsHostKey)
	if err != nil {
		return nil, err
	}
	p.hostPub, p.hostKey = string(ssh.MarshalAuthorizedKey(hostPub)), hostPub
	return p, nil
}

// sshKey writes a new ed25519 private key in OpenSSH format to path.
func sshKey(path string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(crypto.PrivateKey(priv), "rds-fence-dev")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ssh public key: %w", err)
	}
	return sp, nil
}

// kubeconfig is an admin kubeconfig for the API server at url, with the
// certificates inline: client-go caches TLS transports by file name, so
// a second environment in the same directory (new keys, same paths) would
// otherwise be called with the first one's CA.
func (p *pki) kubeconfig(url string) (string, error) {
	var data [3]string
	for i, f := range []string{p.caCert, p.adminCert, p.adminKey} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		data[i] = base64.StdEncoding.EncodeToString(b)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: rds-fence-dev
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: admin
  user: {client-certificate-data: %s, client-key-data: %s}
contexts:
- name: rds-fence-dev
  context: {cluster: rds-fence-dev, user: admin, namespace: default}
current-context: rds-fence-dev
`, url, data[0], data[1], data[2]), nil
}

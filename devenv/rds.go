package devenv

import (
	"context"
	"os"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"

	"github.com/rds-fence/rds-fence/rds"
)

// RDS is a client of the simulated RDS over SSH, as the controller has one
// (to check the storage-side fence from outside).
func (e *Env) RDS() (*rds.Client, error) {
	raw, err := os.ReadFile(e.pki.rdsClientKey)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil {
		return nil, err
	}
	return rds.NewClient(rds.Config{Address: e.addr("rds-ssh"), User: "admin", Signer: signer,
		HostKeyCallback: ssh.FixedHostKey(e.pki.hostKey), Logger: logr.Discard()})
}

// AllowedHost is the RDS fence of a volume: the one host NQN its export admits.
func (e *Env) AllowedHost(ctx context.Context, c *rds.Client, volumeID string) (string, error) {
	d, err := c.GetDisk(ctx, volumeID)
	if err != nil {
		return "", err
	}
	return d.AllowedHost, nil
}

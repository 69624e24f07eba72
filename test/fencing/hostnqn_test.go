package fencing

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/nodeagent"
)

// TestNodeAgentHostNQNEnablesPublish: a node that has not published its
// host NQN is refused; once the node agent annotates its Node, the
// controller publishes to it and the RDS admits exactly that NQN.
func TestNodeAgentHostNQNEnablesPublish(t *testing.T) {
	f := newFixture(t)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-fresh"}}
	if err := direct.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Delete(context.Background(), n) })
	f.waitCached(&corev1.Node{}, client.ObjectKeyFromObject(n), true)
	id := f.volume("data", false)
	_, err := f.publish(id, n.Name, false)
	wantCode(t, err, codes.FailedPrecondition, "host-nqn")

	nqn, _, err := nodeagent.EnsureHostNQN(t.TempDir(), nodeagent.DefaultHostNQNPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := nodeagent.PublishHostNQN(t.Context(), direct, n.Name, nqn); err != nil {
		t.Fatal(err)
	}
	waitFor(f, func(ctx context.Context) bool {
		_, err := f.publish(id, n.Name, false)
		return err == nil
	})
	if got := f.allowed(id); got != nqn {
		t.Fatalf("fence = %q, want the node's host NQN %q", got, nqn)
	}
	// A hostile value is refused before it reaches the API.
	if err := nodeagent.PublishHostNQN(t.Context(), direct, n.Name, `nqn.x:y" ; /disk remove [find]`); err == nil {
		t.Fatal("a hostile host NQN was published")
	}
}

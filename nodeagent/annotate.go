package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AnnotationHostNQN is the Node annotation the controller's storage fence
// reads (attachment/kube.AnnotationHostNQN).
const AnnotationHostNQN = "rds-fence.csi.dev/host-nqn"

// PublishHostNQN records the node's host NQN on its Node object (a merge
// patch of one annotation; nothing else is touched). Until it is there,
// the controller refuses to publish volumes to the node.
func PublishHostNQN(ctx context.Context, c client.Client, node, nqn string) error {
	if err := ValidateHostNQN(nqn); err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationHostNQN: nqn}}})
	if err != nil {
		return err
	}
	n := &corev1.Node{}
	n.Name = node
	if err := c.Patch(ctx, n, client.RawPatch(types.MergePatchType, body)); err != nil {
		return fmt.Errorf("annotating node %s with its host NQN: %w", node, err)
	}
	return nil
}

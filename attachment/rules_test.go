package attachment

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func held(mode Mode, nodes ...string) Record {
	r := Record{VolumeID: "pvc-1", PV: "pv-1", PVC: "ns/claim", Mode: mode}
	for _, n := range nodes {
		r.Holders = append(r.Holders, Holder{Node: n, HostNQN: "nqn.2014-08.org.nvmexpress:uuid:" + n, Since: t0})
	}
	return r
}

func req(node string, mode Mode) PublishRequest {
	return PublishRequest{VolumeID: "pvc-1", Node: node, HostNQN: "nqn.2014-08.org.nvmexpress:uuid:" + node, Mode: mode,
		MigrationTimeout: 10 * time.Minute, Now: t0.Add(time.Minute)}
}

func TestDecidePublish(t *testing.T) {
	live := &LiveMigration{Namespace: "ns", Name: "mig-1", VMI: "vm-1", Source: "a", Target: "b", Created: t0}
	liveToC := &LiveMigration{Namespace: "ns", Name: "mig-1", VMI: "vm-1", Source: "b", Target: "c", Created: t0}
	cases := []struct {
		name        string
		cur         Record
		req         PublishRequest
		facts       Facts
		wantNodes   []string
		wantNoop    bool
		wantCleared []string
		wantErr     []string // parts of a ConflictError message
		wantMigr    bool
	}{
		{name: "free volume", cur: held(ModeSingleNode), req: req("a", ModeSingleNode), wantNodes: []string{"a"}},
		{name: "same node again", cur: held(ModeSingleNode, "a"), req: req("a", ModeSingleNode), wantNodes: []string{"a"}, wantNoop: true},
		{name: "same node, new host NQN", cur: held(ModeSingleNode, "a"),
			req: func() PublishRequest {
				r := req("a", ModeSingleNode)
				r.HostNQN = "nqn.2014-08.org.nvmexpress:uuid:new"
				return r
			}(),
			wantNodes: []string{"a"}},
		{name: "RWO held by live node", cur: held(ModeSingleNode, "a"), req: req("b", ModeSingleNode),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive}}, wantErr: []string{"volume pvc-1", "PVC ns/claim", "attached to node a", "node b", "out-of-service"}},
		{name: "RWO holder unknown state counts as live", cur: held(ModeSingleNode, "a"), req: req("b", ModeSingleNode),
			wantErr: []string{"attached to node a"}},
		{name: "RWO holder deleted", cur: held(ModeSingleNode, "a"), req: req("b", ModeSingleNode),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeDeleted}}, wantNodes: []string{"b"}, wantCleared: []string{"a"}},
		{name: "RWO holder out of service", cur: held(ModeSingleNode, "a"), req: req("b", ModeSingleNode),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeOutOfService}}, wantNodes: []string{"b"}, wantCleared: []string{"a"}},
		{name: "RWX second node without migration", cur: held(ModeMultiNodeBlock, "a"), req: req("b", ModeMultiNodeBlock),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive}}, wantErr: []string{"only during a KubeVirt live migration"}},
		{name: "RWX second node with live migration", cur: held(ModeMultiNodeBlock, "a"), req: req("b", ModeMultiNodeBlock),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: live}, wantNodes: []string{"a", "b"}, wantMigr: true},
		{name: "RWX migration to another target", cur: held(ModeMultiNodeBlock, "a"), req: req("c", ModeMultiNodeBlock),
			facts:   Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: &LiveMigration{Namespace: "ns", Name: "mig-1", Target: "b", Created: t0}},
			wantErr: []string{"targets node b, not c"}},
		{name: "RWX migration window passed", cur: held(ModeMultiNodeBlock, "a"),
			req:   func() PublishRequest { r := req("b", ModeMultiNodeBlock); r.Now = t0.Add(11 * time.Minute); return r }(),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: live}, wantErr: []string{"window has passed"}},
		{name: "RWX third node", cur: held(ModeMultiNodeBlock, "a", "b"), req: req("c", ModeMultiNodeBlock),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive, "b": NodeLive}, Migration: live}, wantErr: []string{"at most two nodes"}},
		{name: "RWX migration target not known yet", cur: held(ModeMultiNodeBlock, "a"), req: req("b", ModeMultiNodeBlock),
			facts:   Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: &LiveMigration{Namespace: "ns", Name: "mig-1", Created: t0}},
			wantErr: []string{"no known target node yet", "retried"}},
		{name: "RWX migration from another source", cur: held(ModeMultiNodeBlock, "a"), req: req("b", ModeMultiNodeBlock),
			facts:   Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: &LiveMigration{Namespace: "ns", Name: "mig-1", Source: "x", Target: "b", Created: t0}},
			wantErr: []string{"moves the VMI from node x"}},
		{name: "RWX third node after a holder was deleted", cur: held(ModeMultiNodeBlock, "a", "b"), req: req("c", ModeMultiNodeBlock),
			facts:     Facts{Nodes: map[string]NodeState{"a": NodeDeleted, "b": NodeLive}, Migration: liveToC},
			wantNodes: []string{"b", "c"}, wantCleared: []string{"a"}, wantMigr: true},
		{name: "mode change while held", cur: held(ModeSingleNode, "a"), req: req("b", ModeMultiNodeBlock),
			facts: Facts{Nodes: map[string]NodeState{"a": NodeLive}, Migration: live}, wantErr: []string{"held in mode SingleNode"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := DecidePublish(c.cur, c.req, c.facts)
			if len(c.wantErr) > 0 {
				var ce *ConflictError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want a ConflictError", err)
				}
				for _, p := range c.wantErr {
					if !strings.Contains(err.Error(), p) {
						t.Fatalf("message %q lacks %q", err, p)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(d.Next.Nodes(), ","); got != strings.Join(c.wantNodes, ",") {
				t.Fatalf("holders = %s, want %v", got, c.wantNodes)
			}
			if d.Noop != c.wantNoop {
				t.Fatalf("noop = %v", d.Noop)
			}
			var cleared []string
			for _, h := range d.Cleared {
				cleared = append(cleared, h.Node)
			}
			if strings.Join(cleared, ",") != strings.Join(c.wantCleared, ",") {
				t.Fatalf("cleared = %v, want %v", cleared, c.wantCleared)
			}
			if (d.MigrationStarted != nil) != c.wantMigr || (d.Next.Migration != nil) != c.wantMigr {
				t.Fatalf("migration = %+v / %+v, want %v", d.MigrationStarted, d.Next.Migration, c.wantMigr)
			}
			if c.wantMigr && (d.Next.Migration.Deadline != t0.Add(10*time.Minute) || d.Next.Migration.Target != c.req.Node) {
				t.Fatalf("migration record = %+v", d.Next.Migration)
			}
			if c.req.Mode == ModeSingleNode && len(d.Next.Holders) > 1 {
				t.Fatal("invariant broken: two holders for a single-node volume")
			}
		})
	}
}

func TestDecideUnpublish(t *testing.T) {
	if d := DecideUnpublish(held(ModeSingleNode, "a"), "b"); !d.Noop || !d.Next.HeldBy("a") {
		t.Fatalf("unpublish of a non-holder = %+v", d)
	}
	if d := DecideUnpublish(held(ModeSingleNode, "a"), "a"); d.Noop || d.Next.Held() {
		t.Fatalf("unpublish of the holder = %+v", d)
	}
	mig := held(ModeMultiNodeBlock, "a", "b")
	mig.Migration = &Migration{Namespace: "ns", Name: "m", Source: "a", Target: "b"}
	d := DecideUnpublish(mig, "a")
	if d.MigrationEnded == nil || !d.MigrationEnded.Succeeded || d.Next.Migration != nil || !d.Next.HeldBy("b") {
		t.Fatalf("source released = %+v", d)
	}
	d = DecideUnpublish(mig, "b")
	if d.MigrationEnded == nil || d.MigrationEnded.Succeeded || !d.Next.HeldBy("a") {
		t.Fatalf("target released = %+v", d)
	}
}

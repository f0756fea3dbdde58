package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
)

// evalJSON is `smile eval --json`: the three scores first, in this order,
// then the details.
type evalJSON struct {
	Accuracy  float64    `json:"accuracy"`
	MacroF1   float64    `json:"macro_f1"`
	N         uint64     `json:"n"`
	Model     string     `json:"model"`
	Version   uint64     `json:"version"`
	Data      string     `json:"data"`
	Labels    []string   `json:"labels"`
	Confusion [][]uint64 `json:"confusion"` // [gold][predicted]
}

func newEvalCmd() *cobra.Command {
	var (
		sf    serverFlags
		data  string
		split string
	)
	cmd := &cobra.Command{
		Use:   "eval MODEL --data NAME|FILE [--split test]",
		Short: "Score a classification vPLM on a dataset split or a labelled file",
		Long: "Run labelled examples through a classification vPLM on the server, exactly as serving answers\n" +
			"them, and print accuracy, macro-F1 and the confusion matrix. --data is a dataset pulled on the\n" +
			"server (its --split, default test) or a local .jsonl/.csv file, checked here and uploaded.",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseData("eval", data)
			if err != nil {
				return err
			}
			if d.file != "" && cmd.Flags().Changed("split") {
				return usagef("eval: --split is for a dataset name; %s is a file", d.file)
			}
			if !slices.Contains(datasets.SplitNames, split) {
				return usagef("eval: --split %q: want %s", split, strings.Join(datasets.SplitNames, ", "))
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := &smilepb.EvalRequest{Model: args[0], Dataset: d.name}
			what := d.file
			if d.file != "" {
				m, err := c.Get(ctx, args[0])
				if err != nil {
					return c.check(err)
				}
				if m.Task != "classify" {
					return fmt.Errorf("eval: %s is an %s vPLM; eval scores classify vPLMs", m.ID, m.Task)
				}
				if req.ExamplesJsonl, err = d.load(m, true); err != nil {
					return err
				}
			} else {
				req.Split = split
				what = d.name + "/" + split
			}
			rep, err := c.Eval(ctx, req)
			if err != nil {
				return c.check(err)
			}
			out := evalJSON{Accuracy: rep.Accuracy, MacroF1: rep.MacroF1, N: rep.N, Model: rep.Model, Version: rep.Version,
				Data: what, Labels: rep.Labels, Confusion: confusionRows(rep)}
			if out.Labels == nil {
				out.Labels = []string{}
			}
			if sf.asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				return enc.Encode(out)
			}
			return writeEval(cmd.OutOrStdout(), out)
		},
	}
	addServerFlags(cmd, &sf, `print one JSON line: {"accuracy","macro_f1","n","model","version","data","labels","confusion"}`)
	cmd.Flags().StringVar(&data, "data", "", "a dataset pulled on the server (e.g. imdb), or a local .jsonl/.csv file to upload")
	cmd.Flags().StringVar(&split, "split", datasets.Test, "split of a named dataset: train, validation or test")
	return cmd
}

// confusionRows reshapes the reply's row-major matrix; [gold][predicted].
func confusionRows(rep *smilepb.EvalReply) [][]uint64 {
	n := len(rep.Labels)
	rows := make([][]uint64, 0, n)
	if n == 0 || len(rep.Confusion) != n*n {
		return rows
	}
	for g := range n {
		rows = append(rows, rep.Confusion[g*n:(g+1)*n])
	}
	return rows
}

// writeEval prints the scores and the confusion matrix as a table.
func writeEval(w io.Writer, e evalJSON) error {
	fmt.Fprintf(w, "%s version %d on %s: %d examples\n", e.Model, e.Version, e.Data, e.N)
	fmt.Fprintf(w, "accuracy  %.4f\nmacro-F1  %.4f\n", e.Accuracy, e.MacroF1)
	if len(e.Confusion) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nconfusion (rows: gold label, columns: predicted)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\t\n", strings.Join(e.Labels, "\t"))
	for g, row := range e.Confusion {
		fmt.Fprintf(tw, "%s", e.Labels[g])
		for _, c := range row {
			fmt.Fprintf(tw, "\t%d", c)
		}
		fmt.Fprintf(tw, "\t\n")
	}
	return tw.Flush()
}

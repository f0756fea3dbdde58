package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
)

func newEmbedCmd(g *globals) *cobra.Command {
	var (
		sf       serverFlags
		cosine   bool
		backbone string
		vplm     string
		opts     = model.DefaultEmbedOptions()
	)
	cmd := &cobra.Command{
		Use:   "embed [flags] TEXT... (or - to read one text per line from stdin)",
		Short: "Compute sentence embeddings: with a vPLM on the server (--model), or with a backbone here",
		Long: "With --model, a vPLM of a running `smile serve` (see --server) computes the embeddings.\n" +
			"Without it they are computed in this process with a backbone (--backbone; the default is\n" +
			"pulled on first use).",
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if vplm != "" {
				for _, local := range []string{"backbone", "max-text-bytes", "max-batch-tokens"} {
					if cmd.Flags().Changed(local) {
						return usagef("embed: --%s is for local embedding; --model asks the server", local)
					}
				}
			} else if cmd.Flags().Changed("server") {
				return usagef("embed: --server needs --model (the vPLM on the server to embed with)")
			}
			if err := opts.Validate(); err != nil {
				return &usageError{err}
			}
			texts, err := textsArg(cmd, args)
			if err != nil {
				return err
			}
			if vplm != "" {
				return embedRemote(cmd, &sf, vplm, texts, cosine)
			}
			bb, err := g.backbone(cmd.Context(), backbone)
			if err != nil {
				return err
			}
			defer bb.Close()
			ids, err := model.Tokenize(bb, texts, opts)
			if err != nil {
				return err
			}
			embs, err := model.EmbedIDs(cmd.Context(), bb, ids, opts.MaxBatchTokens)
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			if sf.asJSON {
				err = writeJSONLines(w, texts, embs)
			} else {
				tokens := make([]int, len(ids))
				for i, t := range ids {
					tokens[i] = len(t)
				}
				writeSummary(w, bb.Info().Name, bb.Info().OutputDim, texts, tokens, embs)
				if cosine {
					writeCosine(w, embs)
				}
			}
			if err != nil {
				return err
			}
			// A bufio.Writer keeps its first write error: Flush reports
			// any failure of the summary's writes too (a closed pipe, a
			// full disk), so a failed write never exits 0.
			return w.Flush()
		},
	}
	addServerFlags(cmd, &sf, `local: one JSON line per text, {"text": ..., "embedding": [...]}; --model: the server's answer`)
	f := cmd.Flags()
	f.BoolVar(&cosine, "cosine", false, "also print the cosine-similarity matrix of the texts")
	f.StringVar(&vplm, "model", "", "a vPLM on the server to embed with (default: embed here with --backbone)")
	f.StringVar(&backbone, "backbone", zoo.DefaultModel, "local: the backbone to embed with")
	f.IntVar(&opts.MaxTextBytes, "max-text-bytes", opts.MaxTextBytes, "local: reject texts longer than this many bytes")
	f.IntVar(&opts.MaxBatchTokens, "max-batch-tokens", opts.MaxBatchTokens, "local: token rows per forward pass")
	return cmd
}

func readLines(r io.Reader) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading stdin: %w", err)
	}
	if len(lines) == 0 {
		return nil, usagef("no texts on stdin")
	}
	return lines, nil
}

// writeJSONLines prints floats in the shortest form that reads back as the
// same float32.
func writeJSONLines(w io.Writer, texts []string, embs [][]float32) error {
	var buf []byte
	for i, e := range embs {
		t, err := json.Marshal(texts[i])
		if err != nil {
			return err
		}
		buf = append(buf[:0], `{"text":`...)
		buf = append(buf, t...)
		buf = append(buf, `,"embedding":[`...)
		for j, v := range e {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendFloat(buf, float64(v), 'g', -1, 32)
		}
		buf = append(buf, "]}\n"...)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// writeSummary prints a line per embedding; tokens (the token count of
// each text) may be nil when they are not known.
func writeSummary(w io.Writer, name string, dim int, texts []string, tokens []int, embs [][]float32) {
	fmt.Fprintf(w, "%s: %d-d embeddings of %d text(s)\n", name, dim, len(texts))
	for i, e := range embs {
		var norm float64
		for _, v := range e {
			norm += float64(v) * float64(v)
		}
		head := make([]string, 0, 4)
		for _, v := range e[:min(4, len(e))] {
			head = append(head, strconv.FormatFloat(float64(v), 'f', 4, 32))
		}
		ntok := ""
		if tokens != nil {
			ntok = fmt.Sprintf("%d tokens  ", tokens[i])
		}
		text := ""
		if i < len(texts) {
			text = abbreviate(texts[i], 60)
		}
		fmt.Fprintf(w, "[%d] %snorm %.4f  [%s ...]  %s\n", i, ntok, math.Sqrt(norm), strings.Join(head, " "), text)
	}
}

func writeCosine(w io.Writer, embs [][]float32) {
	fmt.Fprintln(w, "cosine similarity:")
	fmt.Fprint(w, "     ")
	for j := range embs {
		fmt.Fprintf(w, "%7s", fmt.Sprintf("[%d]", j))
	}
	fmt.Fprintln(w)
	for i, a := range embs {
		fmt.Fprintf(w, "%-5s", fmt.Sprintf("[%d]", i))
		for _, b := range embs {
			fmt.Fprintf(w, "%7.3f", cos(a, b))
		}
		fmt.Fprintln(w)
	}
}

func cos(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

func abbreviate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(string(r[:n-1]) + "…")
}

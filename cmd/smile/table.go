package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
)

// `smile table`: PLOT tables (lower-layer skipping) on the server. A table
// holds the backbone's states after its first layers for every unigram of
// the vocabulary and a corpus's most frequent bigrams and trigrams; a vPLM
// created with --mode plot --table ID looks them up instead of running
// those layers.

func newTableCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "table",
		Short: "Build, list and show PLOT tables (lower-layer skipping) on the server",
		Long: "A PLOT table holds a backbone's states after its first --cut layers for every unigram of the\n" +
			"vocabulary and a corpus's most frequent bigrams and trigrams; a vPLM created with\n" +
			"`smile create NAME --mode plot --table ID` looks its tokens up there instead of running those\n" +
			"layers, in serving and in training.",
		Args: usageArgs(cobra.NoArgs),
		RunE: groupHelp,
	}
	cmd.AddCommand(newTableBuildCmd(), newTableListCmd(), newTableShowCmd())
	return cmd
}

// corpusExts are the extensions of files `smile table build --data` reads:
// JSONL ({"text"} a line, labels ignored), CSV (a "text" column) and plain
// text (a text a line).
var corpusExts = []string{".jsonl", ".ndjson", ".json", ".csv", ".txt"}

// tableFlags are what `smile table build` sends.
type tableFlags struct {
	data     string
	backbone string
	base     string
	tenant   string
	cut      int
	budgetMB int64
	detach   bool
}

// request checks the flags and turns them into the request (without the
// uploaded corpus).
func (tf *tableFlags) request() (*smilepb.TableRequest, dataArg, error) {
	switch {
	case tf.cut < 0 || tf.cut > math.MaxUint32:
		return nil, dataArg{}, usagef("table build: --cut %d: want a layer, 1 to the backbone's layers - 1 (0: half the layers, or the base's cut)", tf.cut)
	case tf.budgetMB < 0 || tf.budgetMB > math.MaxInt64>>20:
		return nil, dataArg{}, usagef("table build: --budget-mb %d: want MiB of entries > 0 (0: the server's default, 512)", tf.budgetMB)
	}
	data, err := parseDataExts("table build", tf.data, corpusExts, ".jsonl, .csv or .txt")
	if err != nil {
		return nil, dataArg{}, err
	}
	return &smilepb.TableRequest{Backbone: tf.backbone, Cut: uint32(tf.cut), Base: tf.base, Dataset: data.name,
		BudgetBytes: tf.budgetMB << 20, Tenant: tf.tenant}, data, nil
}

func newTableBuildCmd() *cobra.Command {
	var (
		sf serverFlags
		tf tableFlags
	)
	cmd := &cobra.Command{
		Use:   "build --data NAME|FILE [flags]",
		Short: "Build a PLOT table on the server and follow its progress",
		Long: "Build a PLOT table on the server, show the job's progress (on stderr) until it ends, and print\n" +
			"the table's id. --data is the corpus whose bigrams and trigrams the table holds: a dataset\n" +
			"pulled on the server (its train split only), or a local file read here and uploaded: JSONL\n" +
			"with a \"text\" field a line (labels ignored), CSV with a text column, or plain text, a text a\n" +
			"line. The table holds --base's n-grams (without one, every unigram of the vocabulary), then\n" +
			"the corpus's most frequent bigrams and trigrams, as many as fit in --budget-mb of entries.\n" +
			"A table is named by its content: building the same one again costs nothing. Ctrl-C cancels\n" +
			"the job (the entries computed so far stay stored; building it again goes on from there).",
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, data, err := tf.request()
			if err != nil {
				return err
			}
			if data.file != "" {
				if req.ExamplesJsonl, err = readCorpus(data.file); err != nil {
					return err
				}
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			job, err := c.BuildTable(cmd.Context(), req)
			if err != nil {
				return c.check(err)
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if tf.detach {
				fmt.Fprintf(stderr, "job %s builds table %s; follow it with `smile job %s --watch`\n", job.Id, job.Table, job.Id)
				if sf.asJSON {
					return printJobLine(stdout, job)
				}
				_, err := fmt.Fprintln(stdout, job.Id)
				return err
			}
			what := data.name
			if data.file != "" {
				what = data.file
			}
			fmt.Fprintf(stderr, "job %s: building table %s on %s\n", job.Id, job.Table, what)
			final, err := followJob(cmd, c, job)
			if err != nil {
				return stopJob(cmd, c, &sf, "table build", job, err)
			}
			if sf.asJSON {
				if err := printJobLine(stdout, final); err != nil {
					return err
				}
			} else if final.State == smilepb.JobState_JOB_SUCCEEDED {
				writeTableSummary(cmd, c, final)
				if _, err := fmt.Fprintln(stdout, final.Table); err != nil {
					return err
				}
			}
			return jobError(final)
		},
	}
	addServerFlags(cmd, &sf, "print the final job record as one JSON line")
	f := cmd.Flags()
	f.StringVar(&tf.data, "data", "", "the corpus: a dataset pulled on the server (e.g. imdb), or a local .jsonl/.csv/.txt file to upload")
	f.StringVar(&tf.backbone, "backbone", "", "backbone (default: the base's, else the server's)")
	f.IntVar(&tf.cut, "cut", 0, "the layers a lookup replaces: 1..cut (0: the base's cut, else half the backbone's layers)")
	f.StringVar(&tf.base, "base", "", "a table to extend: its n-grams come first, and only the new ones are computed")
	f.Int64Var(&tf.budgetMB, "budget-mb", 0, "MiB of entries added on top of the base (0: the server's default, 512)")
	f.StringVar(&tf.tenant, "tenant", "", "the tenant whose device share computes the entries (default: default)")
	f.BoolVar(&tf.detach, "detach", false, "print the job id and return; follow it with `smile job ID --watch`")
	return cmd
}

// writeTableSummary is the end of a successful `smile table build` (on
// stderr: stdout holds only the table's id).
func writeTableSummary(cmd *cobra.Command, c *client, j *smilepb.TrainJob) {
	w := cmd.ErrOrStderr()
	info, err := c.Table(cmd.Context(), j.Table)
	if err != nil {
		fmt.Fprintf(w, "table %s: complete, %d entries (%d computed)\n", j.Table, j.Steps, j.Steps-j.CachedExamples)
		return
	}
	m := info.Table
	fmt.Fprintf(w, "table %s: complete, %d entries (%d unigrams, %d bigrams, %d trigrams), %s, replaces layers 1..%d of %s; %d computed, %d already stored\n",
		m.Id, m.Entries, m.Unigrams, m.Bigrams, m.Trigrams, byteSize(m.EntryBytes), m.Cut, m.Backbone,
		j.Steps-j.CachedExamples, j.CachedExamples)
}

// readCorpus reads a local corpus file into the JSONL the server takes,
// one {"text"} a line, checking every text so that an error names its
// line in the user's file.
func readCorpus(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if fi.Size() > datasets.DefaultMaxBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, over %d", datasets.ErrTooLarge, path, fi.Size(), int64(datasets.DefaultMaxBytes))
	}
	var texts []string
	add := func(line int, text string) error {
		if !utf8.ValidString(text) {
			return &datasets.LineError{Path: path, Line: line, Err: datasets.ErrInvalidUTF8}
		}
		if strings.TrimSpace(text) == "" {
			return &datasets.LineError{Path: path, Line: line, Err: datasets.ErrEmptyText}
		}
		texts = append(texts, text)
		return nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		err = readCorpusCSV(f, path, add)
	case ".txt":
		err = readCorpusLines(f, func(line int, b []byte) error { return add(line, string(b)) })
	default:
		err = readCorpusLines(f, func(line int, b []byte) error {
			if !utf8.Valid(b) {
				return &datasets.LineError{Path: path, Line: line, Err: datasets.ErrInvalidUTF8}
			}
			var rec struct {
				Text *string `json:"text"`
			}
			if b[0] != '{' {
				return &datasets.LineError{Path: path, Line: line, Err: fmt.Errorf("%w: not a JSON object", datasets.ErrMalformed)}
			}
			if err := json.Unmarshal(b, &rec); err != nil {
				return &datasets.LineError{Path: path, Line: line, Err: fmt.Errorf("%w: %v", datasets.ErrMalformed, err)}
			}
			if rec.Text == nil {
				return &datasets.LineError{Path: path, Line: line, Err: fmt.Errorf("%w: no \"text\" field", datasets.ErrEmptyText)}
			}
			return add(line, *rec.Text)
		})
	}
	if err != nil {
		return nil, err
	}
	if len(texts) == 0 {
		return nil, fmt.Errorf("%w: %s holds no texts", datasets.ErrEmptyText, path)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	for _, t := range texts {
		if err := enc.Encode(struct {
			Text string `json:"text"`
		}{t}); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// readCorpusLines calls fn with every line of r that is not blank
// (trimmed, without a leading BOM), numbered from 1.
func readCorpusLines(r io.Reader, fn func(line int, b []byte) error) error {
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\ufeff"))
		}
		if b = bytes.TrimSpace(b); len(b) > 0 {
			if ferr := fn(line, b); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// readCorpusCSV reads the "text" column (named in the header row, any
// case) of a CSV file; other columns, a label among them, are ignored.
func readCorpusCSV(r io.Reader, path string, add func(line int, text string) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s is empty", datasets.ErrEmptyText, path)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", datasets.ErrMalformed, path, err)
	}
	col := -1
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		if strings.EqualFold(strings.TrimSpace(h), "text") {
			col = i
		}
	}
	if col < 0 {
		return &datasets.LineError{Path: path, Line: 1, Err: fmt.Errorf("%w: the header must name a text column, got %q", datasets.ErrMalformed, strings.Join(header, ","))}
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %v", datasets.ErrMalformed, path, err)
		}
		line, _ := cr.FieldPos(0)
		if err := add(line, rec[col]); err != nil {
			return err
		}
	}
}

func newTableListCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the PLOT tables on the server, newest first",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			tables, err := c.Tables(cmd.Context())
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				out := struct {
					Tables []json.RawMessage `json:"tables"`
				}{Tables: []json.RawMessage{}}
				for _, t := range tables {
					b, err := protoJSON(t)
					if err != nil {
						return err
					}
					out.Tables = append(out.Tables, b)
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			return writeTableList(cmd.OutOrStdout(), tables)
		},
	}
	addServerFlags(cmd, &sf, `print {"tables": [...]} as JSON`)
	return cmd
}

func writeTableList(w io.Writer, tables []*smilepb.PlotTable) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tBACKBONE\tCUT\tENTRIES\tUNI/BI/TRI\tSIZE\tSTATE\tBASE\tCORPUS\tCREATED")
	for _, t := range tables {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d/%d/%d\t%s\t%s\t%s\t%s\t%s\n", t.Id, t.Backbone, t.Cut, t.Entries, t.Unigrams, t.Bigrams, t.Trigrams,
			byteSize(t.EntryBytes), tableState(t), dash(t.Base), abbreviateList(t.Corpus, 24), unixMs(t.CreatedUnixMs))
	}
	return tw.Flush()
}

func tableState(t *smilepb.PlotTable) string {
	if t.Complete {
		return "complete"
	}
	return "incomplete"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTableShowCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a PLOT table: its n-grams, size on disk and in memory, and lookups",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			info, err := c.Table(cmd.Context(), args[0])
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				b, err := protoJSON(info)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), b)
			}
			return writeTableInfo(cmd.OutOrStdout(), info)
		},
	}
	addServerFlags(cmd, &sf, "print the table as JSON (its manifest under \"table\")")
	return cmd
}

// writeTableInfo prints a table's details.
func writeTableInfo(w io.Writer, info *smilepb.PlotTableInfo) error {
	m := info.GetTable()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", m.GetId())
	row("backbone", fmt.Sprintf("%s (%s)", m.GetBackbone(), m.GetBackboneFingerprint()))
	state := tableState(m)
	if !m.GetComplete() {
		state += " (its build did not finish: build it again to complete it)"
	}
	row("state", state)
	row("cut", fmt.Sprintf("%d: lookups replace layers 1..%d", m.GetCut(), m.GetCut()))
	row("n-grams", fmt.Sprintf("%d: %d unigrams, %d bigrams, %d trigrams", m.GetEntries(), m.GetUnigrams(), m.GetBigrams(), m.GetTrigrams()))
	row("on disk", fmt.Sprintf("%s of entries (%d wide, fp16); %d entries, %s stored for %s at cut %d, shared by its tables",
		byteSize(m.GetEntryBytes()), m.GetWidth(), info.GetSharedEntries(), byteSize(info.GetSharedEntryBytes()), m.GetBackbone(), m.GetCut()))
	if info.GetOpen() {
		row("in memory", fmt.Sprintf("%s of %s", byteSize(uint64(max(info.GetMemoryBytes(), 0))), byteSize(uint64(max(info.GetMemoryBudgetBytes(), 0)))))
		row("lookups", fmt.Sprintf("%d sequences, %d positions", info.GetSequences(), info.GetPositions()))
		share := func(n uint64) string {
			if info.GetPositions() == 0 {
				return strconv.FormatUint(n, 10)
			}
			return fmt.Sprintf("%d (%.1f%%)", n, 100*float64(n)/float64(info.GetPositions()))
		}
		row("hit levels", fmt.Sprintf("full %s, partial %s, unigram %s, none %s",
			share(info.GetHitsFull()), share(info.GetHitsPartial()), share(info.GetHitsUnigram()), share(info.GetHitsZero())))
		row("hit rate", fmt.Sprintf("%.1f%% of positions found as an n-gram of two or more tokens", 100*info.GetHitRate()))
		row("reads", fmt.Sprintf("%d from memory, %d from storage; %d corrupt entries, %d read errors",
			info.GetMemoryHits(), info.GetSourceReads(), info.GetCorrupt(), info.GetReadErrors()))
	} else {
		row("in memory", "not open on this node (a plot-mode vPLM's first request opens it)")
	}
	row("base", dash(m.GetBase()))
	row("corpus", fmt.Sprintf("%s: %d sequences, %d positions", m.GetCorpus(), m.GetCorpusSequences(), m.GetCorpusPositions()))
	row("budget", byteSize(m.GetBudgetBytes())+" of entries on top of the base")
	row("created", unixMs(m.GetCreatedUnixMs()))
	if m.GetUpdatedUnixMs() != m.GetCreatedUnixMs() {
		row("updated", unixMs(m.GetUpdatedUnixMs()))
	}
	return tw.Flush()
}

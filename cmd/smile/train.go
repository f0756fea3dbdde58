package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
)

// dataArg is what --data names: a dataset pulled on the server, or a local
// file read and uploaded.
type dataArg struct {
	name string // a dataset name, or ""
	file string // a local JSONL/CSV file, or ""
}

// dataExts are the extensions of files --data uploads (datasets.LoadWith's).
var dataExts = []string{".jsonl", ".ndjson", ".json", ".csv"}

// parseData decides what --data names: a path that exists, or that looks
// like one (a known extension, a path separator), is a file; anything else
// is a dataset name for the server.
func parseData(cmdName, arg string) (dataArg, error) {
	return parseDataExts(cmdName, arg, dataExts, ".jsonl or .csv")
}

// parseDataExts is parseData for files with one of exts (named so in
// messages: kinds).
func parseDataExts(cmdName, arg string, exts []string, kinds string) (dataArg, error) {
	if arg == "" {
		return dataArg{}, usagef("%s: --data is required: a dataset name (e.g. imdb, pulled on the server with `smile data pull`) or a %s file", cmdName, kinds)
	}
	ext := strings.ToLower(filepath.Ext(arg))
	known := slices.Contains(exts, ext)
	fi, err := os.Stat(arg)
	switch {
	case err == nil && fi.IsDir():
		return dataArg{}, usagef("%s: --data %s is a directory: want a %s file, or a dataset name", cmdName, arg, kinds)
	case err == nil && !known:
		return dataArg{}, usagef("%s: --data %s: unknown file extension %q: want %s (or a dataset name that is not also a file here)", cmdName, arg, ext, kinds)
	case err == nil:
		return dataArg{file: arg}, nil
	case known || strings.ContainsRune(arg, filepath.Separator) || strings.ContainsRune(arg, '/'):
		return dataArg{}, usagef("%s: --data %s: no such file", cmdName, arg)
	}
	return dataArg{name: arg}, nil
}

// load reads a local data file, checking its labels against the model's
// (classify) so that every error names its line in the user's file.
func (d dataArg) load(m *api.Model, allowSingleClass bool) ([]byte, error) {
	opts := datasets.DefaultLoadOptions()
	if m.Task == "classify" {
		opts.Labels = m.Labels
	}
	opts.AllowSingleClass = allowSingleClass
	ex, err := datasets.LoadWith(d.file, opts)
	if err != nil {
		return nil, err
	}
	return datasets.EncodeJSONL(ex)
}

// trainFlags are the hyperparameters `smile train` sends; zero takes the
// server's default (train.Defaults).
type trainFlags struct {
	data        string
	epochs      int
	batchSize   int
	lr          float64
	weightDecay float64
	warmup      float64
	clipNorm    float64
	patience    int
	seed        uint64
	full        bool
	detach      bool
}

// config checks the flags and turns them into the request's config.
func (tf *trainFlags) config(cmd *cobra.Command) (*smilepb.TrainConfig, error) {
	nan := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	changed := cmd.Flags().Changed
	switch {
	case tf.epochs < 0 || tf.epochs > 1000:
		return nil, usagef("train: --epochs %d: want 1..1000 (0: the server's default)", tf.epochs)
	case tf.batchSize < 0 || tf.batchSize > 4096:
		return nil, usagef("train: --batch-size %d: want 1..4096 (0: the server's default)", tf.batchSize)
	case nan(tf.lr) || tf.lr < 0 || (changed("lr") && tf.lr == 0) || tf.lr > 10:
		return nil, usagef("train: --lr %g: want a learning rate > 0 and <= 10", tf.lr)
	case nan(tf.weightDecay) || tf.weightDecay < 0 || tf.weightDecay >= 1:
		return nil, usagef("train: --weight-decay %g: want 0 <= wd < 1", tf.weightDecay)
	case nan(tf.warmup) || tf.warmup < 0 || tf.warmup > 1:
		return nil, usagef("train: --warmup %g: want a fraction of the steps in [0, 1]", tf.warmup)
	case nan(tf.clipNorm):
		return nil, usagef("train: --clip-norm %g: want a finite norm (negative disables clipping)", tf.clipNorm)
	}
	return &smilepb.TrainConfig{Epochs: uint32(tf.epochs), BatchSize: uint32(tf.batchSize), Lr: float32(tf.lr),
		WeightDecay: float32(tf.weightDecay), Warmup: float32(tf.warmup), ClipNorm: float32(tf.clipNorm),
		Seed: tf.seed, Patience: int32(tf.patience)}, nil
}

func newTrainCmd() *cobra.Command {
	var (
		sf serverFlags
		tf trainFlags
	)
	cmd := &cobra.Command{
		Use:   "train MODEL --data NAME|FILE [flags]",
		Short: "Train a vPLM on the server and follow its progress",
		Long: "Train a vPLM's adapter and head on the server, then show the job's progress (on stderr) until it\n" +
			"ends and print a summary. --data is a dataset pulled on the server (`smile data pull imdb`),\n" +
			"or a local .jsonl/.csv file, checked here (every error names its line) and uploaded.\n" +
			"The vPLM keeps answering with its current version while it trains; the job commits the best\n" +
			"validation epoch as a new version. Ctrl-C cancels the job. A hyperparameter left at 0 takes\n" +
			"the server's default (see docs/api.md).",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := tf.config(cmd)
			if err != nil {
				return err
			}
			data, err := parseData("train", tf.data)
			if err != nil {
				return err
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := &smilepb.TrainRequest{Model: args[0], Dataset: data.name, Config: cfg, Full: tf.full}
			if data.file != "" {
				m, err := c.Get(ctx, args[0])
				if err != nil {
					return c.check(err)
				}
				if req.ExamplesJsonl, err = data.load(m, false); err != nil {
					return err
				}
			}
			job, err := c.Train(ctx, req)
			if err != nil {
				return c.check(err)
			}
			if tf.detach {
				if sf.asJSON {
					return printJobLine(cmd.OutOrStdout(), job)
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), job.Id)
				return err
			}
			what := data.name
			if data.file != "" {
				what = data.file
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "job %s: training %s on %s\n", job.Id, job.Model, what)
			final, err := followJob(cmd, c, job)
			if err != nil {
				return stopJob(cmd, c, &sf, "train", job, err)
			}
			if sf.asJSON {
				if err := printJobLine(cmd.OutOrStdout(), final); err != nil {
					return err
				}
			} else {
				writeJobSummary(cmd.OutOrStdout(), final)
			}
			return jobError(final)
		},
	}
	addServerFlags(cmd, &sf, "print the final job record as one JSON line")
	f := cmd.Flags()
	f.StringVar(&tf.data, "data", "", "a dataset pulled on the server (e.g. imdb), or a local .jsonl/.csv file to upload")
	f.IntVar(&tf.epochs, "epochs", 0, "epochs at most (0: the server's default, 10)")
	f.IntVar(&tf.batchSize, "batch-size", 0, "examples per step (0: the server's default, 32)")
	f.Float64Var(&tf.lr, "lr", 0, "peak learning rate (0: the server's default, 1e-3)")
	f.Float64Var(&tf.weightDecay, "weight-decay", 0, "AdamW weight decay (0: the server's default, 0.01)")
	f.Float64Var(&tf.warmup, "warmup", 0, "fraction of the steps with a linear warm-up (0: the server's default, 0.06)")
	f.Float64Var(&tf.clipNorm, "clip-norm", 0, "gradient-norm clip (0: the server's default, 1; negative: none)")
	f.IntVar(&tf.patience, "patience", 0, "epochs without a better validation accuracy before stopping (0: the server's default, 3; negative: never)")
	f.Uint64Var(&tf.seed, "seed", 0, "shuffling seed (0: the server's default)")
	f.BoolVar(&tf.full, "full", false, "full fine-tuning of a private backbone copy, for comparison: reports validation accuracy, commits nothing")
	f.BoolVar(&tf.detach, "detach", false, "print the job id and return; follow it with `smile job ID --watch`")
	return cmd
}

// followJob shows a job's progress on stderr until it ends and returns its
// final record.
func followJob(cmd *cobra.Command, c *client, job *smilepb.TrainJob) (*smilepb.TrainJob, error) {
	p := newProgress(cmd.ErrOrStderr())
	final := job
	err := c.WatchJob(cmd.Context(), job.Id, func(j *smilepb.TrainJob) error {
		p.update(j)
		final = j
		return nil
	})
	p.done()
	return final, err
}

// stopJob ends a command whose following of job failed with err: on
// Ctrl-C (the command's context ended) it cancels the job, which would
// otherwise go on with nobody watching.
func stopJob(cmd *cobra.Command, c *client, sf *serverFlags, name string, job *smilepb.TrainJob, err error) error {
	if cmd.Context().Err() == nil {
		return c.check(err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, cerr := c.CancelJob(cctx, job.Id)
	if cerr != nil {
		return fmt.Errorf("%s: interrupted; canceling job %s failed: %w", name, job.Id, c.check(cerr))
	}
	if sf.asJSON {
		_ = printJobLine(cmd.OutOrStdout(), j)
	}
	if j.State != smilepb.JobState_JOB_CANCELED {
		// It ended before the cancel reached it.
		return fmt.Errorf("%s: interrupted, but job %s had already ended: %s", name, job.Id, stateName(j.State))
	}
	return fmt.Errorf("%s: interrupted: job %s canceled", name, job.Id)
}

// jobError is the error a command ends with for a job that did not succeed.
func jobError(j *smilepb.TrainJob) error {
	switch j.State {
	case smilepb.JobState_JOB_FAILED:
		if e := api.FromProto(j.Error); e != nil {
			return fmt.Errorf("job %s failed: %w", j.Id, e)
		}
		return fmt.Errorf("job %s failed", j.Id)
	case smilepb.JobState_JOB_CANCELED:
		return fmt.Errorf("job %s was canceled", j.Id)
	}
	return nil
}

// writeJobSummary is the end of `smile train`: what the job committed.
func writeJobSummary(w io.Writer, j *smilepb.TrainJob) {
	stop := fmt.Sprintf("ran all %d epochs", j.Epochs)
	if j.EarlyStopped {
		stop = fmt.Sprintf("stopped early after epoch %d of %d", j.Epoch, j.Epochs)
	}
	switch {
	case j.State == smilepb.JobState_JOB_SUCCEEDED && j.Full:
		fmt.Fprintf(w, "%s: full fine-tuning (comparison): best validation accuracy %s; %s; nothing committed (still version %d)\n",
			j.Model, percent(j.BestValAccuracy), stop, j.BaseVersion)
	case j.State == smilepb.JobState_JOB_SUCCEEDED:
		fmt.Fprintf(w, "%s: version %d committed (was %d); best validation accuracy %s; %s\n",
			j.Model, j.Version, j.BaseVersion, percent(j.BestValAccuracy), stop)
	default:
		fmt.Fprintf(w, "%s: job %s %s; the model stays at version %d\n", j.Model, j.Id, stateName(j.State), j.BaseVersion)
	}
}

// jobJSON is a job record as the server writes it (protojson, every field).
func jobJSON(j *smilepb.TrainJob) (json.RawMessage, error) { return protoJSON(j) }

// protoJSON is a message as the server writes it (protojson, every field).
func protoJSON(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// printJobLine writes a job record as one compact JSON line.
func printJobLine(w io.Writer, j *smilepb.TrainJob) error {
	b, err := jobJSON(j)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(b) // a RawMessage is compacted
}

func newJobsCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "jobs [MODEL|TABLE]",
		Short: "List the jobs on the server: training and table building (of one vPLM or PLOT table)",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			model := ""
			if len(args) == 1 {
				model = args[0]
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			jobs, err := c.Jobs(cmd.Context(), model)
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				out := struct {
					Jobs []json.RawMessage `json:"jobs"`
				}{Jobs: []json.RawMessage{}}
				for _, j := range jobs {
					b, err := jobJSON(j)
					if err != nil {
						return err
					}
					out.Jobs = append(out.Jobs, b)
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			return writeJobTable(cmd.OutOrStdout(), jobs)
		},
	}
	addServerFlags(cmd, &sf, `print {"jobs": [...]} as JSON`)
	return cmd
}

// writeJobTable lists jobs: a training job's vPLM, epochs and scores; a
// table job's table and entries (PROGRESS), the scores "-".
func writeJobTable(w io.Writer, jobs []*smilepb.TrainJob) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tMODEL/TABLE\tSTATE\tPROGRESS\tLOSS\tVAL\tBEST\tVERSION\tDATASET\tUPDATED")
	for _, j := range jobs {
		if j.Kind == actors.JobKindTable {
			fmt.Fprintf(tw, "%s\ttable\t%s\t%s\t%d/%d entries\t-\t-\t-\t-\t%s\t%s\n", j.Id, j.Table, tableStateName(j.State), j.Step, j.Steps,
				abbreviateList(j.Dataset, 24), unixMs(j.UpdatedUnixMs))
			continue
		}
		kind, version := "train", strconv.FormatUint(j.Version, 10)
		if j.Full {
			kind = "full"
		}
		if j.State != smilepb.JobState_JOB_SUCCEEDED || j.Full {
			version = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tepoch %d/%d\t%.4f\t%s\t%s\t%s\t%s\t%s\n", j.Id, kind, j.Model, stateName(j.State), j.Epoch, j.Epochs,
			j.Loss, percent(j.ValAccuracy), percent(j.BestValAccuracy), version, abbreviateList(j.Dataset, 24), unixMs(j.UpdatedUnixMs))
	}
	return tw.Flush()
}

// writeJob prints one job's details.
func writeJob(w io.Writer, j *smilepb.TrainJob) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	if j.Kind == actors.JobKindTable {
		writeTableJob(row, j)
		return tw.Flush()
	}
	row("id", j.Id)
	row("model", j.Model)
	row("tenant", j.Tenant)
	row("dataset", j.Dataset)
	row("state", stateName(j.State))
	if j.Stage != "" {
		row("stage", j.Stage)
	}
	if j.Error != nil {
		row("error", api.FromProto(j.Error).Error())
	}
	row("epoch", fmt.Sprintf("%d/%d", j.Epoch, j.Epochs))
	row("step", fmt.Sprintf("%d/%d", j.Step, j.Steps))
	row("loss", fmt.Sprintf("%.4f", j.Loss))
	row("validation", fmt.Sprintf("%s (best %s)", percent(j.ValAccuracy), percent(j.BestValAccuracy)))
	row("examples", fmt.Sprintf("%d train, %d validation (%d cached)", j.TrainExamples, j.ValidationExamples, j.CachedExamples))
	if !api.JobEnded(j) {
		row("speed", fmt.Sprintf("%.0f examples/s, ETA %s", j.ExamplesPerS, eta(j.EtaMs)))
	}
	switch {
	case j.Full:
		row("method", "full fine-tuning (comparison; commits nothing)")
		row("base version", strconv.FormatUint(j.BaseVersion, 10))
	case j.State == smilepb.JobState_JOB_SUCCEEDED:
		row("version", fmt.Sprintf("%d (from %d)", j.Version, j.BaseVersion))
	default:
		row("base version", strconv.FormatUint(j.BaseVersion, 10))
	}
	if j.EarlyStopped {
		row("early stopped", "yes")
	}
	if c := j.Config; c != nil {
		row("config", fmt.Sprintf("epochs %d, batch %d, lr %g, weight decay %g, warm-up %g, clip %g, patience %d, seed %d",
			c.Epochs, c.BatchSize, c.Lr, c.WeightDecay, c.Warmup, c.ClipNorm, c.Patience, c.Seed))
	}
	row("created", unixMs(j.CreatedUnixMs))
	row("updated", unixMs(j.UpdatedUnixMs))
	return tw.Flush()
}

// writeTableJob is writeJob's rows for a job that builds a PLOT table.
func writeTableJob(row func(k, v string), j *smilepb.TrainJob) {
	row("id", j.Id)
	row("kind", "table (builds a PLOT table)")
	row("table", j.Table)
	row("tenant", j.Tenant)
	row("corpus", j.Dataset)
	row("state", tableStateName(j.State))
	if j.Stage != "" {
		row("stage", j.Stage)
	}
	if j.Error != nil {
		row("error", api.FromProto(j.Error).Error())
	}
	row("entries", fmt.Sprintf("%d/%d stored (%d already stored when it started)", j.Step, j.Steps, j.CachedExamples))
	if !api.JobEnded(j) {
		row("speed", fmt.Sprintf("%.0f n-grams/s, ETA %s", j.ExamplesPerS, eta(j.EtaMs)))
	}
	if r := j.TableRequest; r != nil {
		base := r.Base
		if base == "" {
			base = "- (every unigram of the vocabulary)"
		}
		row("request", fmt.Sprintf("backbone %s, cut %d, budget %s", r.Backbone, r.Cut, byteSize(uint64(max(r.BudgetBytes, 0)))))
		row("base", base)
	}
	row("created", unixMs(j.CreatedUnixMs))
	row("updated", unixMs(j.UpdatedUnixMs))
}

func newJobCmd() *cobra.Command {
	var (
		sf    serverFlags
		watch bool
	)
	cmd := &cobra.Command{
		Use:   "job ID [--watch]",
		Short: "Show a job (training or table building); --watch follows it until it ends",
		Long: "Show a job's record. With --watch, show its progress (on stderr) until it ends, then\n" +
			"the record; the exit status is then non-zero unless the job succeeded. Ctrl-C stops watching\n" +
			"(the job goes on; `smile cancel ID` stops it).",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			j, err := c.Job(cmd.Context(), args[0])
			if err != nil {
				return c.check(err)
			}
			if watch {
				if j, err = followJob(cmd, c, j); err != nil {
					if cmd.Context().Err() != nil {
						return fmt.Errorf("job: stopped watching %s; it goes on (`smile cancel %s` stops it)", args[0], args[0])
					}
					return c.check(err)
				}
			}
			if sf.asJSON {
				b, err := jobJSON(j)
				if err != nil {
					return err
				}
				if err := printJSON(cmd.OutOrStdout(), b); err != nil {
					return err
				}
			} else if err := writeJob(cmd.OutOrStdout(), j); err != nil {
				return err
			}
			if watch {
				return jobError(j)
			}
			return nil
		},
	}
	addServerFlags(cmd, &sf, "print the job record as JSON")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job's progress until it ends")
	return cmd
}

func newCancelCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a job (a vPLM keeps its current version; a table's entries stored so far are kept)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			j, err := c.CancelJob(cmd.Context(), args[0])
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				b, err := jobJSON(j)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), b)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "job %s: %s\n", j.Id, stateName(j.State))
			return err
		},
	}
	addServerFlags(cmd, &sf, "print the job record as JSON")
	return cmd
}

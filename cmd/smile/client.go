package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/api"
)

// The client commands speak the HTTP API of a running `smile serve`.

// serverFlags are the flags every client command shares.
type serverFlags struct {
	server string
	asJSON bool
}

// addServerFlags registers --server and --json on a client command.
func addServerFlags(cmd *cobra.Command, sf *serverFlags, jsonHelp string) {
	f := cmd.Flags()
	f.StringVar(&sf.server, "server", defaultServer(),
		"`host:port` of a running smile serve (env SMILE_SERVER), or a comma-separated list of a cluster's nodes: "+
			"a call goes to the node that answered last, and on to the next while nodes are down or overloaded")
	f.BoolVar(&sf.asJSON, "json", false, jsonHelp)
}

// defaultServer is $SMILE_SERVER, else where `smile serve` listens by default.
func defaultServer() string {
	if s := os.Getenv("SMILE_SERVER"); s != "" {
		return s
	}
	return defaultAddr
}

// client is an api.Client that names the servers it tried when none
// could be reached.
type client struct {
	*api.Client
	server string
}

// unreachableRounds: a command gives up after every server refused the
// connection this many times in a row (a few tens of milliseconds), rather
// than retrying until the call's deadline: nothing listening is most often
// a server not started, which the user should hear at once.
const unreachableRounds = 3

func (sf *serverFlags) client() (*client, error) {
	var servers []string
	for s := range strings.SplitSeq(sf.server, ",") {
		servers = append(servers, strings.TrimSpace(s))
	}
	ac, err := api.NewClient(servers...)
	if err != nil {
		return nil, usagef("--server %q: want host:port or http://host:port, or a comma-separated list of them", sf.server)
	}
	ac.UnreachableRounds = unreachableRounds
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the server is usually on this machine; a proxy would only get in the way
	tr.DialContext = d.DialContext
	ac.HTTP = &http.Client{Transport: tr}
	return &client{Client: ac, server: sf.server}, nil
}

// errNoServer: nothing answered at the server address.
var errNoServer = errors.New("no smile server")

// check turns a failed call's error into what the user should read: a call
// whose last attempt could not connect names the addresses and how to
// start a server; server errors pass through as *api.Error.
func (c *client) check(err error) error {
	if err == nil {
		return nil
	}
	e, ok := errors.AsType[*api.Error](err)
	if op, dial := errors.AsType[*net.OpError](err); ok && e.Code == api.CodeUnavailable && dial && op.Op == "dial" {
		return fmt.Errorf("%w at %s (%v): start one with `smile serve`, or point --server (or SMILE_SERVER) at one",
			errNoServer, c.server, op)
	}
	return err
}

// formatError is how main prints an error: a server error as "code:
// message", naming the offending text once.
func formatError(err error) string {
	e, ok := err.(*api.Error)
	if !ok || e.Index < 0 {
		return err.Error()
	}
	// The server's message usually names the text already ("text 2: ...").
	if prefix := fmt.Sprintf("text %d: ", e.Index); !strings.HasPrefix(e.Message, prefix) {
		return e.Code + ": " + prefix + e.Message
	}
	return e.Code + ": " + e.Message
}

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func newCreateCmd() *cobra.Command {
	var (
		sf  serverFlags
		req api.CreateModelRequest
	)
	cmd := &cobra.Command{
		Use:   "create NAME --task classify|embed [flags]",
		Short: "Derive a vPLM from a backbone on the server",
		Long: "Derive a vPLM: an identity-initialised adapter (it answers like the backbone until trained)\n" +
			"and, for classification, a head over --labels.",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.ID = args[0]
			switch req.Task {
			case "classify":
				if len(req.Labels) < 2 {
					return usagef("create: --task classify needs --labels with at least two labels (e.g. --labels neg,pos)")
				}
			case "embed":
				if len(req.Labels) > 0 {
					return usagef("create: --labels is for --task classify")
				}
			case "":
				return usagef("create: --task is required: classify or embed")
			default:
				return usagef("create: --task %q: want classify or embed", req.Task)
			}
			switch req.Adapter {
			case "bottleneck", "lora":
			default:
				return usagef("create: --adapter %q: want bottleneck or lora", req.Adapter)
			}
			if req.Rank < 0 || req.EmbedDim < 0 {
				return usagef("create: --rank and --embed-dim must not be negative")
			}
			switch {
			case req.Mode == "" && req.Table != "":
				req.Mode = api.ModePlot // a table is only for plot mode
			case req.Mode == "" || req.Mode == api.ModeFull:
				if req.Table != "" {
					return usagef("create: --table is for --mode plot")
				}
			case req.Mode == api.ModePlot:
				if req.Table == "" {
					return usagef("create: --mode plot needs --table ID (see `smile table ls`, `smile table build`)")
				}
			default:
				return usagef("create: --mode %q: want full or plot", req.Mode)
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			m, err := c.Create(cmd.Context(), req)
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			return writeModel(cmd.OutOrStdout(), m)
		},
	}
	addServerFlags(cmd, &sf, "print the created model as JSON")
	f := cmd.Flags()
	f.StringVar(&req.Task, "task", "", "classify or embed")
	f.StringSliceVar(&req.Labels, "labels", nil, "classify: the labels, comma-separated")
	f.StringVar(&req.Adapter, "adapter", "bottleneck", "adapter kind: bottleneck or lora")
	f.IntVar(&req.Rank, "rank", 0, "adapter rank (0: the server's default, 64)")
	f.IntSliceVar(&req.Layers, "layers", nil, "adapted layers, comma-separated indices (default: the backbone's upper half)")
	f.StringVar(&req.Tenant, "tenant", "", "owning tenant (default: default)")
	f.StringVar(&req.Precision, "precision", "", "how the params blob stores the adapter and head: fp16 (default) or int8 (per-channel scales, about half the bytes)")
	f.StringVar(&req.Backbone, "backbone", "", "backbone (default: the server's)")
	f.IntVar(&req.EmbedDim, "embed-dim", 0, "embed: output width (0: the backbone's)")
	f.StringVar(&req.Mode, "mode", "", "full (the backbone's lower layers run) or plot (a PLOT table replaces them); default full, plot with --table")
	f.StringVar(&req.Table, "table", "", "plot mode: the PLOT table's id (`smile table ls`)")
	return cmd
}

// writeModel prints one model's details.
func writeModel(w io.Writer, m *api.Model) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", m.ID)
	row("tenant", m.Tenant)
	row("backbone", m.Backbone)
	row("task", m.Task)
	if len(m.Labels) > 0 {
		row("labels", strings.Join(m.Labels, ", "))
	}
	if m.EmbedDim > 0 {
		row("embed dim", strconv.Itoa(m.EmbedDim))
	}
	if m.Mode == api.ModePlot {
		row("mode", "plot: table "+m.Table)
	} else {
		row("mode", "full")
	}
	row("adapter", m.Adapter)
	row("rank", strconv.Itoa(m.Rank))
	row("layers", intList(m.Layers))
	row("version", strconv.FormatUint(m.Version, 10))
	row("params", fmt.Sprintf("%s, %s (%s)", byteSize(m.ParamsBytes), m.Precision, m.ParamsDigest))
	row("created", unixMs(m.CreatedMs))
	if m.UpdatedMs != m.CreatedMs {
		row("updated", unixMs(m.UpdatedMs))
	}
	return tw.Flush()
}

func intList(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func unixMs(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format(time.DateTime)
}

func byteSize(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// listPage is the server's largest page (api.DefaultHTTPConfig's MaxListLimit).
const listPage = 1000

func newListCmd() *cobra.Command {
	var (
		sf     serverFlags
		tenant string
		limit  int
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the vPLMs on the server",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usagef("ls: --limit %d: want 0 (everything) or more", limit)
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			all := api.ModelList{Models: []api.Model{}}
			for {
				n := 0 // the server's default page
				if limit > 0 {
					n = min(limit-len(all.Models), listPage)
				}
				page, err := c.List(cmd.Context(), tenant, all.Next, n)
				if err != nil {
					return c.check(err)
				}
				all.Models = append(all.Models, page.Models...)
				all.Next = page.Next
				if page.Next == "" || len(page.Models) == 0 || (limit > 0 && len(all.Models) >= limit) {
					break
				}
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), all)
			}
			return writeModelTable(cmd.OutOrStdout(), all.Models)
		},
	}
	addServerFlags(cmd, &sf, `print {"models": [...], "next": ...} as JSON`)
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's vPLMs")
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all, paging through the catalog)")
	return cmd
}

func writeModelTable(w io.Writer, ms []api.Model) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tTASK\tMODE\tADAPTER\tRANK\tLAYERS\tVERSION\tPARAMS\tLABELS")
	for _, m := range ms {
		labels := strings.Join(m.Labels, ",")
		if labels == "" {
			labels = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", m.ID, m.Tenant, m.Task, dash(m.Mode), m.Adapter, m.Rank,
			intList(m.Layers), m.Version, byteSize(m.ParamsBytes), abbreviateList(labels, 40))
	}
	return tw.Flush()
}

func abbreviateList(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func newShowCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a vPLM's catalog entry",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			m, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			return writeModel(cmd.OutOrStdout(), m)
		},
	}
	addServerFlags(cmd, &sf, "print the model as JSON")
	return cmd
}

func newRemoveCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete vPLMs (and their params, unless another vPLM shares them)",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			// Like rm(1): a failure does not stop the rest; every failure is
			// reported and the command fails with the last one.
			var failed error
			var deleted []string
			for _, id := range args {
				if err := c.check(c.Delete(cmd.Context(), id)); err != nil {
					if errors.Is(err, errNoServer) {
						return err
					}
					if failed != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "smile: %s\n", formatError(failed))
					}
					failed = err
					continue
				}
				deleted = append(deleted, id)
				if !sf.asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", id)
				}
			}
			if sf.asJSON {
				if err := printJSON(cmd.OutOrStdout(), map[string][]string{"deleted": append([]string{}, deleted...)}); err != nil {
					return err
				}
			}
			return failed
		},
	}
	addServerFlags(cmd, &sf, `print {"deleted": [...]} as JSON`)
	return cmd
}

// textsArg reads the texts of a command: the arguments, or one per line
// from stdin for a lone "-".
func textsArg(cmd *cobra.Command, args []string) ([]string, error) {
	if len(args) == 1 && args[0] == "-" {
		return readLines(cmd.InOrStdin())
	}
	return args, nil
}

func newClassifyCmd() *cobra.Command {
	var (
		sf  serverFlags
		top int
	)
	cmd := &cobra.Command{
		Use:   "classify MODEL TEXT... (or - to read one text per line from stdin)",
		Short: "Classify texts with a vPLM on the server",
		Args:  usageArgs(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if top < 1 {
				return usagef("classify: --top %d: want 1 or more", top)
			}
			texts, err := textsArg(cmd, args[1:])
			if err != nil {
				return err
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			r, err := c.Classify(cmd.Context(), args[0], texts)
			if err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			return writePredictions(cmd.OutOrStdout(), texts, r.Predictions, top)
		},
	}
	addServerFlags(cmd, &sf, "print the server's answer as JSON")
	cmd.Flags().IntVar(&top, "top", 3, "probabilities shown per text")
	return cmd
}

func writePredictions(w io.Writer, texts []string, ps []api.Prediction, top int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, p := range ps {
		type lp struct {
			label string
			p     float32
		}
		probs := make([]lp, 0, len(p.Probs))
		for l, v := range p.Probs {
			probs = append(probs, lp{l, v})
		}
		sort.Slice(probs, func(a, b int) bool {
			if probs[a].p != probs[b].p {
				return probs[a].p > probs[b].p
			}
			return probs[a].label < probs[b].label
		})
		shown := make([]string, 0, top)
		for _, x := range probs[:min(top, len(probs))] {
			shown = append(shown, fmt.Sprintf("%s %.4f", x.label, x.p))
		}
		text := ""
		if i < len(texts) {
			text = abbreviate(texts[i], 60)
		}
		fmt.Fprintf(tw, "[%d]\t%s\t%.4f\t(%s)\t%s\n", i, p.Label, p.Probs[p.Label], strings.Join(shown, ", "), text)
	}
	return tw.Flush()
}

// embedRemote is `smile embed --model MODEL`: the server's vPLM computes.
func embedRemote(cmd *cobra.Command, sf *serverFlags, id string, texts []string, cosine bool) error {
	c, err := sf.client()
	if err != nil {
		return err
	}
	r, err := c.Embed(cmd.Context(), id, texts)
	if err != nil {
		return c.check(err)
	}
	if sf.asJSON {
		return printJSON(cmd.OutOrStdout(), r)
	}
	w := cmd.OutOrStdout()
	writeSummary(w, id, r.Dim, texts, nil, r.Embeddings)
	if cosine {
		writeCosine(w, r.Embeddings)
	}
	return nil
}

func newTenantCmd() *cobra.Command {
	var (
		sf   serverFlags
		req  api.TenantRequest
		show bool
	)
	cmd := &cobra.Command{
		Use:   "tenant NAME [--weight W] [--max-inflight N] [--rate R] [--burst B] [--max-vplms N] [--max-bytes B] | tenant NAME [--show]",
		Short: "Set a tenant's share of the devices, its limits and quotas (those not given keep their values); without them, show them with the usage",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Weight <= 0 || req.MaxInflight < 0 || req.RatePerSec < 0 || req.Burst < 0 {
				return usagef("tenant: --weight must be positive and the limits not negative")
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			settings := []string{"weight", "max-inflight", "rate", "burst", "max-vplms", "max-bytes"}
			changed := false
			for _, f := range settings {
				changed = changed || cmd.Flags().Changed(f)
			}
			if show && changed {
				return usagef("tenant: --show prints the settings; it does not take new ones")
			}
			// Without settings to change, the command shows the tenant.
			show = show || !changed
			if !show && changed {
				// Settings not given keep their stored values: a PUT
				// replaces them all.
				cur, err := c.Tenant(cmd.Context(), args[0])
				if err != nil {
					return c.check(err)
				}
				for _, k := range []struct {
					flag string
					set  func()
				}{
					{"weight", func() { req.Weight = cur.Weight }},
					{"max-inflight", func() { req.MaxInflight = cur.MaxInflight }},
					{"rate", func() { req.RatePerSec = cur.RatePerSec }},
					{"burst", func() { req.Burst = cur.Burst }},
					{"max-vplms", func() { req.MaxVPLMs = cur.MaxVPLMs }},
					{"max-bytes", func() { req.MaxBytes = cur.MaxBytes }},
				} {
					if !cmd.Flags().Changed(k.flag) {
						k.set()
					}
				}
			}
			if show {
				t, err := c.Tenant(cmd.Context(), args[0])
				if err != nil {
					return c.check(err)
				}
				if sf.asJSON {
					return printJSON(cmd.OutOrStdout(), t)
				}
				quota := func(v uint64, f func(uint64) string) string {
					if v == 0 {
						return "unlimited"
					}
					return f(v)
				}
				count := func(v uint64) string { return strconv.FormatUint(v, 10) }
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "tenant %s: weight %g, %d vPLMs (quota %s), %s of params (quota %s)\n",
					t.Name, t.Weight, t.VPLMs, quota(t.MaxVPLMs, count), byteSize(t.Bytes), quota(t.MaxBytes, byteSize))
				return err
			}
			if err := c.PutTenant(cmd.Context(), args[0], req); err != nil {
				return c.check(err)
			}
			if sf.asJSON {
				return printJSON(cmd.OutOrStdout(), req)
			}
			unlimited := func(v string, zero bool) string {
				if zero {
					return "unlimited"
				}
				return v
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "tenant %s: weight %g, in flight %s, rate %s/s, burst %s\n", args[0], req.Weight,
				unlimited(strconv.Itoa(req.MaxInflight), req.MaxInflight == 0),
				unlimited(strconv.FormatFloat(req.RatePerSec, 'g', -1, 64), req.RatePerSec == 0),
				burstText(req))
			return err
		},
	}
	addServerFlags(cmd, &sf, "print the tenant's settings as JSON")
	f := cmd.Flags()
	f.Float64Var(&req.Weight, "weight", 1, "share of each device, relative to the other tenants'")
	f.IntVar(&req.MaxInflight, "max-inflight", 0, "requests queued plus running at once (0: unlimited)")
	f.Float64Var(&req.RatePerSec, "rate", 0, "requests per second (0: unlimited)")
	f.IntVar(&req.Burst, "burst", 0, "requests admitted at once after a quiet period (0: max(1, ceil(rate)))")
	f.Uint64Var(&req.MaxVPLMs, "max-vplms", 0, "quota: vPLMs the tenant may hold (0: unlimited)")
	f.Uint64Var(&req.MaxBytes, "max-bytes", 0, "quota: bytes of params blobs the tenant may hold (0: unlimited)")
	f.BoolVar(&show, "show", false, "show the tenant's settings, quotas and usage instead of setting them")
	return cmd
}

func burstText(t api.TenantRequest) string {
	switch {
	case t.Burst > 0:
		return strconv.Itoa(t.Burst)
	case t.RatePerSec > 0:
		return "max(1, ceil(rate))"
	}
	return "unlimited"
}

package uselite_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/tokenizer"
	"github.com/smile-vplm/smile/model/uselite"
)

// refEmbedding is one line of testdata/use-lite/reference_embeddings.jsonl,
// written by scripts/reference/gen.js from the JS library.
type refEmbedding struct {
	Source    string    `json:"source"`
	Text      string    `json:"text"`
	IDs       []int32   `json:"ids"`
	Embedding []float32 `json:"embedding"`
}

func readRefs(t *testing.T) []refEmbedding {
	t.Helper()
	f, err := os.Open("../../testdata/use-lite/reference_embeddings.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var refs []refEmbedding
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r refEmbedding
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(refs) < 200 {
		t.Fatalf("reference file holds %d embeddings, want at least 200", len(refs))
	}
	return refs
}

func loadModel(t *testing.T, backend string) model.Backbone {
	t.Helper()
	z := testenv.UseLite(t)
	dev, err := cpu.New(cpu.Config{Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := z.Load(dev, zoo.DefaultModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bb.Close() })
	return bb
}

const parityTol = 1e-4

func maxAbs(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestParity: every reference text gets the JS library's ids, and its
// embedding, computed in one mixed batch with all the others, is within
// 1e-4 of the library's (which embedded each text alone).
func TestParity(t *testing.T) {
	for _, backend := range cpu.Available() {
		t.Run(backend, func(t *testing.T) {
			refs := readRefs(t)
			if backend == "purego" {
				// The pure-Go GEMM is the slow fallback (and ten times
				// slower under -race, where CI runs it): check every 5th
				// text, every 25th under the race detector, long ones
				// included. The openblas run checks every text, and the
				// two backends' GEMMs are held to each other by
				// gpu/gputest's conformance suite.
				step := 5
				if raceEnabled {
					step = 25
				}
				var sub []refEmbedding
				for i := 0; i < len(refs); i += step {
					sub = append(sub, refs[i])
				}
				refs = sub
			}
			bb := loadModel(t, backend)
			texts := make([]string, len(refs))
			for i, r := range refs {
				texts[i] = r.Text
			}
			ids, err := model.Tokenize(bb, texts, model.DefaultEmbedOptions())
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range refs {
				if want := bb.Prepare(r.IDs); !slices.Equal(ids[i], want) {
					t.Errorf("text %d (%s): ids differ from the JS library\n got %v\nwant %v", i, r.Source, ids[i], want)
				}
			}
			embs, err := model.EmbedIDs(context.Background(), bb, ids, 2048)
			if err != nil {
				t.Fatal(err)
			}
			worst, long := 0.0, 0
			for i, r := range refs {
				d := maxAbs(embs[i], r.Embedding)
				worst = max(worst, d)
				if len(r.IDs) > 128 {
					long++
				}
				if d > parityTol {
					t.Errorf("text %d (%s, %d ids): max-abs difference %.3g > %g", i, r.Source, len(r.IDs), d, parityTol)
				}
			}
			if long == 0 {
				t.Error("no reference text is longer than the 128-id window; truncation is untested")
			}
			t.Logf("%d texts (%d over 128 ids): worst max-abs difference %.3g", len(refs), long, worst)
		})
	}
}

// TestBatchInvariance: a text's embedding does not depend on its batch.
func TestBatchInvariance(t *testing.T) {
	refs := readRefs(t)[:40]
	bb := loadModel(t, "auto")
	texts := make([]string, len(refs))
	for i, r := range refs {
		texts[i] = r.Text
	}
	all, err := model.Embed(context.Background(), bb, texts, model.DefaultEmbedOptions())
	if err != nil {
		t.Fatal(err)
	}
	for i := range texts {
		one, err := model.Embed(context.Background(), bb, texts[i:i+1], model.DefaultEmbedOptions())
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbs(one[0], all[i]); d > 1e-5 {
			t.Errorf("text %d: alone vs in batch differ by %.3g", i, d)
		}
	}
}

// TestBadTexts: each bad text gets a typed error naming its index.
func TestBadTexts(t *testing.T) {
	bb := loadModel(t, "auto")
	big := strings.Repeat("word ", 1<<20/5+1)
	cases := []struct {
		name  string
		texts []string
		want  error
		index int
	}{
		{"empty", []string{"fine", ""}, model.ErrEmptyText, 1},
		{"1MB", []string{big}, model.ErrTextTooLong, 0},
		{"invalid UTF-8", []string{"ok", "ok", "bad \xff\xfe byte"}, tokenizer.ErrInvalidUTF8, 2},
		{"none", nil, model.ErrBadInput, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := model.Embed(context.Background(), bb, c.texts, model.DefaultEmbedOptions())
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var te *model.TextError
			if c.index >= 0 && (!errors.As(err, &te) || te.Index != c.index) {
				t.Fatalf("err = %v, want a TextError for text %d", err, c.index)
			}
		})
	}
	// A 1 MB text is fine when the caller raises the limit: it embeds as
	// its first 128 ids.
	opts := model.DefaultEmbedOptions()
	opts.MaxTextBytes = 2 << 20
	long, err := model.Embed(context.Background(), bb, []string{big}, opts)
	if err != nil {
		t.Fatal(err)
	}
	short, err := model.Embed(context.Background(), bb, []string{strings.Repeat("word ", 200)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbs(long[0], short[0]); d > 1e-6 {
		t.Fatalf("a text past the window should embed as its first 128 ids; differs by %g", d)
	}
}

// pkgFiles reads the real npm package kept by the zoo.
func pkgFiles(t *testing.T) *uselite.Package {
	t.Helper()
	z := testenv.UseLite(t)
	p, ok := z.PackagePath(zoo.DefaultModel)
	if !ok {
		t.Fatal("the use-lite npm package is not in the test data directory")
	}
	pkg, err := uselite.ReadPackage(p)
	if err != nil {
		t.Fatal(err)
	}
	return pkg
}

func clone(p *uselite.Package) *uselite.Package {
	c := &uselite.Package{Name: p.Name, Files: map[string][]byte{}}
	for k, v := range p.Files {
		c.Files[k] = v
	}
	return c
}

// TestBrokenPackage: broken model files give ErrBadModelFile naming the
// file, field or tensor at fault.
func TestBrokenPackage(t *testing.T) {
	pkg := pkgFiles(t)
	if _, _, _, err := uselite.Import(pkg); err != nil {
		t.Fatalf("the real package does not import: %v", err)
	}
	mj := string(pkg.Files["model.json"])
	cases := []struct {
		name   string
		mutate func(p *uselite.Package)
		want   string
	}{
		{"truncated shard", func(p *uselite.Package) { p.Files["group1-shard7of7"] = p.Files["group1-shard7of7"][:1000] }, "truncated"},
		{"missing shard", func(p *uselite.Package) { delete(p.Files, "group1-shard3of7") }, "group1-shard3of7"},
		{"bad JSON", func(p *uselite.Package) { p.Files["model.json"] = []byte(mj[:len(mj)/2]) }, "model.json"},
		{"missing vocab", func(p *uselite.Package) { delete(p.Files, "vocab.json") }, "vocab.json"},
		{"missing model.json", func(p *uselite.Package) { delete(p.Files, "model.json") }, "model.json"},
		{"wrong tensor shape", func(p *uselite.Package) {
			p.Files["model.json"] = editWeight(t, mj, "module/Embeddings_en", func(w map[string]any) { w["shape"] = []int{4001, 512} })
		}, "module/Embeddings_en"},
		{"wrong dtype", func(p *uselite.Package) {
			p.Files["model.json"] = editWeight(t, mj, "module/Embeddings_en", func(w map[string]any) { w["dtype"] = "complex64" })
		}, "complex64"},
		{"other graph", func(p *uselite.Package) {
			p.Files["model.json"] = []byte(strings.ReplaceAll(mj, `"op": "Relu"`, `"op": "Elu"`))
		}, "Relu"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := clone(pkg)
			c.mutate(p)
			_, _, _, err := uselite.Import(p)
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("err = %v, want ErrBadModelFile", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name %q", err, c.want)
			}
		})
	}
	t.Run("not a tgz", func(t *testing.T) {
		_, err := uselite.ReadPackageTGZ("x.tgz", strings.NewReader("plain text"))
		if !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), "x.tgz") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestBrokenBackboneFile: a converted file with a wrong-shaped tensor, or a
// vocabulary that does not parse, fails to load with a typed error.
func TestBrokenBackboneFile(t *testing.T) {
	pkg := pkgFiles(t)
	cfg, ts, vocab, err := uselite.Import(pkg)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	write := func(ts []uselite.Tensor, vocab []byte) *backbonefile.File {
		var buf bytes.Buffer
		if err := writeFile(&buf, cfg, ts, vocab); err != nil {
			t.Fatal(err)
		}
		f, err := backbonefile.Parse("test.smile", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	bad := append([]uselite.Tensor(nil), ts...)
	for i := range bad {
		if bad[i].Name == "layer.1.ffn1.weight" {
			bad[i].Shape = []int{bad[i].Shape[1], bad[i].Shape[0]}
		}
	}
	if _, err := uselite.FromFile(dev, write(bad, vocab)); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), "layer.1.ffn1.weight") {
		t.Fatalf("wrong shape: err = %v", err)
	}
	if _, err := uselite.FromFile(dev, write(ts, []byte(`[["a", 1], ["b"`))); !errors.Is(err, model.ErrBadModelFile) {
		t.Fatalf("bad vocab: err = %v", err)
	}
	m, err := uselite.FromFile(dev, write(ts, vocab))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

// editWeight rewrites one weightsManifest entry of model.json.
func editWeight(t *testing.T, modelJSON, name string, edit func(w map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(modelJSON), &m); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range m["weightsManifest"].([]any) {
		for _, w := range g.(map[string]any)["weights"].([]any) {
			if wm := w.(map[string]any); wm["name"] == name {
				edit(wm)
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("weight %q not in model.json", name)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunPoolEqualsLayersThenPool: the fused last layer + pool computes
// what running every layer and pooling computes.
func TestRunPoolEqualsLayersThenPool(t *testing.T) {
	refs := readRefs(t)[:60]
	bb := loadModel(t, "auto")
	texts := make([]string, len(refs))
	for i, r := range refs {
		texts[i] = r.Text
	}
	ids, err := model.Tokenize(bb, texts, model.DefaultEmbedOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dim := bb.Info().OutputDim
	plain := make([]float32, len(ids)*dim)
	st, err := bb.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	layers := 0
	if err := bb.RunLayers(ctx, st, bb.Info().Layers, func(l int, h gpu.Mat) { layers = l }); err != nil {
		t.Fatal(err)
	}
	if layers != bb.Info().Layers {
		t.Fatalf("observer saw %d layers, want %d", layers, bb.Info().Layers)
	}
	if err := bb.Pool(ctx, st, plain); err != nil {
		t.Fatal(err)
	}
	bb.Release(st)
	fused := make([]float32, len(ids)*dim)
	st, err = bb.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := bb.(model.PoolRunner).RunPool(ctx, st, fused); err != nil {
		t.Fatal(err)
	}
	bb.Release(st)
	if d := maxAbs(plain, fused); d > 1e-6 {
		t.Fatalf("RunPool differs from RunLayers+Pool by %g", d)
	}
}

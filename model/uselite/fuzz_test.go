package uselite

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"testing"

	"github.com/smile-vplm/smile/model"
)

const tinyModelJSON = `{"format":"graph-model","modelTopology":{"node":[{"name":"w","op":"Const"},{"name":"x","op":"Placeholder"}]},
"weightsManifest":[{"paths":["s1"],"weights":[{"name":"w","shape":[2,2],"dtype":"float32"},{"name":"c","shape":[],"dtype":"int32"}]}]}`

// FuzzParseGraph: no model.json, however broken, panics the parser; every
// failure is ErrBadModelFile.
func FuzzParseGraph(f *testing.F) {
	f.Add([]byte(tinyModelJSON), 20)
	f.Add([]byte(`{"modelTopology":{"node":[]},"weightsManifest":[]}`), 0)
	f.Add([]byte(`{"modelTopology":{"node":[{"name":"a","op":"b"}]},"weightsManifest":[{"paths":["s1"],"weights":[{"name":"w","shape":[-1],"dtype":"float32"}]}]}`), 4)
	f.Add([]byte(`{"modelTopology":{"node":[{"name":"a","op":"b"}]},"weightsManifest":[{"paths":["s1"],"weights":[{"name":"w","shape":[65536,65536,65536],"dtype":"float32"}]}]}`), 4)
	f.Add([]byte(`[`), 0)
	f.Fuzz(func(t *testing.T, js []byte, shard int) {
		if shard < 0 || shard > 1<<16 {
			return
		}
		files := map[string][]byte{"s1": make([]byte, shard)}
		g, err := ParseGraph(js, files)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if _, _, err := Convert(g); err != nil && !errors.Is(err, model.ErrBadModelFile) {
			t.Fatalf("untyped error from Convert: %v", err)
		}
	})
}

// FuzzReadPackageTGZ: arbitrary bytes as a package tarball.
func FuzzReadPackageTGZ(f *testing.F) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{"package/dist/model.json": tinyModelJSON, "package/dist/s1": "0123456789abcdefghij", "package/README.md": "x"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		pkg, err := ReadPackageTGZ("fuzz.tgz", bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if _, _, _, err := Import(pkg); err != nil && !errors.Is(err, model.ErrBadModelFile) {
			t.Fatalf("untyped error from Import: %v", err)
		}
	})
}

func TestTinyPackage(t *testing.T) {
	g, err := ParseGraph([]byte(tinyModelJSON), map[string][]byte{"s1": make([]byte, 20)})
	if err != nil {
		t.Fatal(err)
	}
	if w := g.Weights["w"]; w == nil || len(w.F32) != 4 {
		t.Fatalf("weight w: %+v", w)
	}
	if _, err := ParseGraph([]byte(tinyModelJSON), map[string][]byte{"s1": make([]byte, 24)}); !errors.Is(err, model.ErrBadModelFile) {
		t.Fatalf("extra shard bytes: %v", err)
	}
	if _, _, err := Convert(g); !errors.Is(err, model.ErrBadModelFile) {
		t.Fatalf("a graph that is not USE-Lite converts: %v", err)
	}
}

package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/model"
)

// raw assembles a file from a header string and a data region.
func raw(header string, body []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(body))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, body...)
}

func sampleTensors() []Tensor {
	return []Tensor{
		FromFloat32("w", []int{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
		FromBytes("vocab", []byte("hello\nworld\n")),
		FromFloat32("b", []int{3}, []float32{-1, 0.5, 7}),
		{Name: "empty", DType: F32, Shape: []int{0, 4}, Data: nil},
		{Name: "scalar", DType: I64, Shape: []int{}, Data: []byte{42, 0, 0, 0, 0, 0, 0, 0}},
	}
}

func TestRoundTrip(t *testing.T) {
	meta := map[string]string{"format": "pt", "k<&>": "v\"q"}
	var buf bytes.Buffer
	if err := Write(&buf, sampleTensors(), meta); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if n := binary.LittleEndian.Uint64(data); n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	f, err := Parse("rt", data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Names(), []string{"b", "empty", "scalar", "vocab", "w"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	if got := f.Metadata(); len(got) != 2 || got["format"] != "pt" || got["k<&>"] != "v\"q" {
		t.Errorf("Metadata = %v", got)
	}
	w, err := f.Float32("w", 2, 3)
	if err != nil || !slices.Equal(w, []float32{1, 2, 3, 4, 5, 6}) {
		t.Errorf("Float32(w) = %v, %v", w, err)
	}
	if _, err := f.Float32("w"); err != nil {
		t.Errorf("Float32 without shape: %v", err)
	}
	v, err := f.Tensor("vocab")
	if err != nil || string(v.Data) != "hello\nworld\n" || v.DType != U8 {
		t.Errorf("Tensor(vocab) = %+v, %v", v, err)
	}
	e, err := f.Float32("empty", 0, 4)
	if err != nil || len(e) != 0 {
		t.Errorf("Float32(empty) = %v, %v", e, err)
	}
	s, _ := f.Tensor("scalar")
	if s.Elems() != 1 || len(s.Shape) != 0 {
		t.Errorf("scalar = %+v", s)
	}

	// Deterministic: the same tensors in another order give the same bytes.
	ts := sampleTensors()
	slices.Reverse(ts)
	var buf2 bytes.Buffer
	if err := Write(&buf2, ts, map[string]string{"k<&>": "v\"q", "format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Error("Write is not deterministic")
	}
}

func TestFloat32Conversions(t *testing.T) {
	half := []uint16{0x3C00, 0xC000, 0x3800, 0x0001, 0x7C00, 0x8000, 0x7BFF, 0x03FF}
	wantHalf := []float32{1, -2, 0.5, float32(math.Ldexp(1, -24)), float32(math.Inf(1)), float32(math.Copysign(0, -1)), 65504, float32(math.Ldexp(1023, -24))}
	hb := make([]byte, 2*len(half))
	for i, h := range half {
		binary.LittleEndian.PutUint16(hb[2*i:], h)
	}
	bf := []float32{1, -3.5, 1e30, -1e-30}
	bb := make([]byte, 2*len(bf))
	for i, x := range bf {
		binary.LittleEndian.PutUint16(bb[2*i:], uint16(math.Float32bits(x)>>16))
	}
	db := make([]byte, 8*2)
	binary.LittleEndian.PutUint64(db, math.Float64bits(0.25))
	binary.LittleEndian.PutUint64(db[8:], math.Float64bits(-8))
	var buf bytes.Buffer
	err := Write(&buf, []Tensor{
		{Name: "h", DType: F16, Shape: []int{len(half)}, Data: hb},
		{Name: "bf", DType: BF16, Shape: []int{2, 2}, Data: bb},
		{Name: "d", DType: F64, Shape: []int{2}, Data: db},
		{Name: "i", DType: I32, Shape: []int{1}, Data: []byte{1, 0, 0, 0}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("conv", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Float32("h")
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(wantHalf[i]) {
			t.Errorf("half %#04x -> %v, want %v", half[i], got[i], wantHalf[i])
		}
	}
	got, err = f.Float32("bf", 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if d := math.Abs(float64(got[i]-bf[i])) / math.Abs(float64(bf[i])); d > 1.0/128 {
			t.Errorf("bf16 %v -> %v", bf[i], got[i])
		}
	}
	if got, err = f.Float32("d"); err != nil || !slices.Equal(got, []float32{0.25, -8}) {
		t.Errorf("F64 -> %v, %v", got, err)
	}
	if _, err := f.Float32("i"); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), `"i"`) {
		t.Errorf("I32 as float32: %v", err)
	}
	if _, err := f.Float32("h", 4, 2); !errors.Is(err, model.ErrBadModelFile) ||
		!strings.Contains(err.Error(), "[8]") || !strings.Contains(err.Error(), "[4 2]") {
		t.Errorf("shape mismatch error %v should name want and got", err)
	}
	if _, err := f.Float32("nope"); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
}

func TestParseBroken(t *testing.T) {
	body16 := make([]byte, 16)
	valid := func() []byte {
		var buf bytes.Buffer
		if err := Write(&buf, sampleTensors(), map[string]string{"a": "b"}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	hugeLen := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeLen, 1<<40)
	cases := []struct {
		name string
		data []byte
		want string // a fragment the error must contain
	}{
		{"empty", nil, "too short"},
		{"short length", []byte{1, 2, 3}, "too short"},
		{"header beyond file", raw(`{}`, nil)[:9], "exceeds"},
		{"header length over limit", hugeLen, "exceeds the limit"},
		{"truncated data", valid[:len(valid)-1], "data_offsets"},
		{"extra data", append(slices.Clone(valid), 0), "cover"},
		{"not an object", raw(`[]`, nil), "does not start"},
		{"bad JSON", raw(`{"a":`, nil), "header"},
		{"trailing JSON", raw(`{} {}`, nil), "trailing"},
		{"invalid UTF-8", raw("{\"\xff\":1}", nil), "UTF-8"},
		{"unknown dtype", raw(`{"t":{"dtype":"F17","shape":[4],"data_offsets":[0,16]}}`, body16), `"t"`},
		{"dtype not string", raw(`{"t":{"dtype":4,"shape":[4],"data_offsets":[0,16]}}`, body16), "dtype"},
		{"wrong shape", raw(`{"t":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}`, body16), "needs 20 bytes"},
		{"negative dim", raw(`{"t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}`, body16), "non-negative"},
		{"fractional dim", raw(`{"t":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}`, body16), "non-negative"},
		{"NaN dim", raw(`{"t":{"dtype":"F32","shape":["NaN"],"data_offsets":[0,16]}}`, body16), "integer"},
		{"overflowing shape", raw(`{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}`, body16), "2^64"},
		{"offsets out of range", raw(`{"t":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`, body16), "beyond"},
		{"offsets reversed", raw(`{"t":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}}`, body16), "begin after end"},
		{"three offsets", raw(`{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16,16]}}`, body16), "want 2"},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, body16), "overlap"},
		{"hole", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`, body16), "hole"},
		{"duplicate name", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, body16), "duplicate"},
		{"duplicate field", raw(`{"a":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, body16), "duplicate"},
		{"unknown field", raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":1}}`, body16), "unknown field"},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,16]}}`, body16), "missing field shape"},
		{"missing offsets", raw(`{"a":{"dtype":"F32","shape":[4]}}`, body16), "missing field data_offsets"},
		{"missing dtype", raw(`{"a":{"shape":[4],"data_offsets":[0,16]}}`, body16), "missing field dtype"},
		{"empty name", raw(`{"":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, body16), "empty name"},
		{"metadata not strings", raw(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"metadata not object", raw(`{"__metadata__":"x"}`, nil), "want an object"},
		{"entry not object", raw(`{"a":[1]}`, nil), `"a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse("broken.safetensors", c.data)
			if err == nil {
				t.Fatalf("Parse succeeded: %v", f.Names())
			}
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Errorf("error %v does not wrap ErrBadModelFile", err)
			}
			if !strings.Contains(err.Error(), "broken.safetensors") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q should name the file and contain %q", err, c.want)
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	cases := map[string][]Tensor{
		"short data": {{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}},
		"bad dtype":  {{Name: "a", DType: "X", Shape: []int{1}, Data: make([]byte, 4)}},
		"negative":   {{Name: "a", DType: U8, Shape: []int{-1}}},
		"empty name": {{Name: "", DType: U8, Shape: []int{0}}},
		"reserved":   {{Name: MetadataKey, DType: U8, Shape: []int{0}}},
		"duplicate":  {FromBytes("a", nil), FromBytes("a", nil)},
	}
	for name, ts := range cases {
		var buf bytes.Buffer
		if err := Write(&buf, ts, nil); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before failing", name, buf.Len())
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	var buf bytes.Buffer
	if err := Write(&buf, sampleTensors(), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.Float32("b", 3); err != nil || !slices.Equal(b, []float32{-1, 0.5, 7}) {
		t.Errorf("Float32(b) = %v, %v", b, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.Float32("b"); err == nil {
		t.Error("Float32 after Close succeeded")
	}

	if err := os.WriteFile(path, buf.Bytes()[:buf.Len()-3], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open truncated: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, model.ErrBadModelFile) {
		t.Errorf("Open empty: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open missing: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	if err := Write(&buf, sampleTensors(), map[string]string{"a": "b"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(raw(`{"t":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(raw(`{"__metadata__":{"x":"y"}}`, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz", data)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("error %v does not wrap ErrBadModelFile", err)
			}
			return
		}
		// Everything a valid file hands out must be usable and must
		// survive a round trip through Write.
		var ts []Tensor
		for _, n := range file.Names() {
			tn, err := file.Tensor(n)
			if err != nil {
				t.Fatal(err)
			}
			if tn.DType.isFloat() {
				if _, err := file.Float32(n, tn.Shape...); err != nil {
					t.Fatal(err)
				}
			}
			ts = append(ts, tn)
		}
		var out bytes.Buffer
		if err := Write(&out, ts, file.Metadata()); err != nil {
			t.Fatalf("re-Write: %v", err)
		}
		again, err := Parse("again", out.Bytes())
		if err != nil {
			t.Fatalf("re-Parse: %v", err)
		}
		if !slices.Equal(again.Names(), file.Names()) {
			t.Fatal("names changed in round trip")
		}
	})
}

package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/smile-vplm/smile/model"
)

// MaxHeaderSize bounds the JSON header, as Hugging Face's reader does, so a
// corrupt length cannot make the parser chew through a whole large file.
const MaxHeaderSize = 100 << 20

// MetadataKey is the reserved header entry holding the string metadata.
const MetadataKey = "__metadata__"

// Tensor is one named tensor: its dtype, shape and raw little-endian bytes.
// Data returned by a File aliases the file's memory: it is read-only and, for
// a File from Open, only valid until Close.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// Elems is the number of elements of t's shape (1 for a scalar).
func (t Tensor) Elems() int { return numElems(t.Shape) }

func numElems(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// File is a parsed safetensors file.
type File struct {
	name    string
	data    []byte
	tensors map[string]Tensor
	names   []string
	meta    map[string]string
	unmap   func() error
}

// Name is the file name the File was opened or parsed with.
func (f *File) Name() string { return f.name }

// Names lists the tensor names in sorted order.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Metadata returns a copy of the header's "__metadata__" map (empty if absent).
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		m[k] = v
	}
	return m
}

// Has reports whether the file holds a tensor called name.
func (f *File) Has(name string) bool {
	_, ok := f.tensors[name]
	return ok
}

// Tensor returns the tensor called name; a missing tensor is an error
// wrapping model.ErrBadModelFile.
func (f *File) Tensor(name string) (Tensor, error) {
	t, ok := f.tensors[name]
	if !ok {
		return Tensor{}, f.errorf("tensor %q: missing", name)
	}
	return t, nil
}

// Float32 returns a fresh copy of tensor name converted to float32 (from F32,
// F16, BF16 or F64). With wantShape given, the tensor's shape must equal it;
// a mismatch names the tensor, the wanted and the stored shape.
func (f *File) Float32(name string, wantShape ...int) ([]float32, error) {
	t, err := f.Tensor(name)
	if err != nil {
		return nil, err
	}
	if len(wantShape) > 0 && !slices.Equal(t.Shape, wantShape) {
		return nil, f.errorf("tensor %q: shape %v, want %v", name, t.Shape, wantShape)
	}
	if !t.DType.isFloat() {
		return nil, f.errorf("tensor %q: dtype %s is not a float type", name, t.DType)
	}
	dst := make([]float32, t.Elems())
	decodeFloat32(dst, t.DType, t.Data)
	return dst, nil
}

// Close releases the file's memory mapping (a no-op for a parsed File). Tensor
// data handed out before must not be used afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	unmap := f.unmap
	f.unmap, f.data, f.tensors, f.names = nil, nil, nil, nil
	return unmap()
}

func (f *File) errorf(format string, args ...any) error {
	return badFile(f.name, format, args...)
}

func badFile(name, format string, args ...any) error {
	return fmt.Errorf("%w: safetensors %s: %s", model.ErrBadModelFile, name, fmt.Sprintf(format, args...))
}

// Parse validates data as a safetensors file. name only labels errors. The
// File's tensors alias data, which must not change while the File is used.
func Parse(name string, data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, badFile(name, "%d bytes: too short for the header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderSize {
		return nil, badFile(name, "header length %d exceeds the limit %d", n, MaxHeaderSize)
	}
	if n > uint64(len(data)-8) {
		return nil, badFile(name, "header length %d exceeds the %d bytes after the length", n, len(data)-8)
	}
	hdr := data[8 : 8+n]
	body := data[8+n:]
	if len(hdr) == 0 || hdr[0] != '{' {
		return nil, badFile(name, "header: does not start with '{'")
	}
	if !utf8.Valid(hdr) {
		return nil, badFile(name, "header: invalid UTF-8")
	}
	f := &File{name: name, data: data, tensors: map[string]Tensor{}, meta: map[string]string{}}
	type span struct {
		name       string
		begin, end uint64
	}
	var spans []span
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	err := readObject(dec, func(key string) error {
		if key == MetadataKey {
			return readObject(dec, func(k string) error {
				v, err := readString(dec)
				if err != nil {
					return fmt.Errorf("%s[%q]: %w", MetadataKey, k, err)
				}
				f.meta[k] = v
				return nil
			})
		}
		if key == "" {
			return errors.New("tensor with an empty name")
		}
		t, b, e, err := readTensorInfo(dec)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		if e > uint64(len(body)) {
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] beyond the %d data bytes", key, b, e, len(body))
		}
		if want, ok := byteSize(t.Shape, t.DType.Size()); !ok || want != e-b {
			return fmt.Errorf("tensor %q: shape %v of %s needs %s bytes, data_offsets span %d",
				key, t.Shape, t.DType, sizeString(want, ok), e-b)
		}
		t.Name = key
		t.Data = body[b:e:e]
		f.tensors[key] = t
		f.names = append(f.names, key)
		spans = append(spans, span{key, b, e})
		return nil
	})
	if err != nil {
		return nil, badFile(name, "header: %v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		return nil, badFile(name, "header: trailing data after the JSON object (%v)", tokOrErr(tok, err))
	}
	// The data region must be exactly tiled by the tensors: no overlap, no
	// hole, nothing after the last tensor.
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return cmpU64(a.begin, b.begin)
		}
		return cmpU64(a.end, b.end)
	})
	var pos uint64
	for _, s := range spans {
		if s.begin < pos {
			return nil, badFile(name, "tensor %q: data_offsets [%d, %d] overlap the previous tensor (ends at %d)", s.name, s.begin, s.end, pos)
		}
		if s.begin > pos {
			return nil, badFile(name, "tensor %q: data_offsets [%d, %d] leave a hole after byte %d", s.name, s.begin, s.end, pos)
		}
		pos = s.end
	}
	if pos != uint64(len(body)) {
		return nil, badFile(name, "tensors cover %d of the %d data bytes", pos, len(body))
	}
	slices.Sort(f.names)
	return f, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sizeString(n uint64, ok bool) string {
	if !ok {
		return "more than 2^64"
	}
	return strconv.FormatUint(n, 10)
}

// byteSize is prod(shape)*elem, with ok false on overflow.
func byteSize(shape []int, elem int) (uint64, bool) {
	n := uint64(elem)
	for _, d := range shape {
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 {
			return 0, false
		}
		n = lo
	}
	return n, true
}

func tokOrErr(tok json.Token, err error) any {
	if err != nil {
		return err
	}
	return tok
}

// readObject reads a JSON object from dec, calling field for each key with
// the decoder positioned at the key's value; duplicate keys are an error.
func readObject(dec *json.Decoder, field func(key string) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("got %v, want an object", tok)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("got %v, want an object key", tok)
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if err := field(key); err != nil {
			return err
		}
	}
	_, err = dec.Token() // the closing '}'; More already checked it is there
	return err
}

func readString(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("got %v, want a string", describe(tok))
	}
	return s, nil
}

// readUints reads an array of non-negative integers.
func readUints(dec *json.Decoder, field string) ([]uint64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("%s: got %v, want an array", field, describe(tok))
	}
	out := []uint64{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s: got %v, want an integer", field, describe(tok))
		}
		v, err := strconv.ParseUint(num.String(), 10, 63)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a non-negative integer", field, num)
		}
		out = append(out, v)
	}
	_, err = dec.Token()
	return out, err
}

func describe(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		return string(t)
	case string:
		return strconv.Quote(t)
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}

// readTensorInfo reads one header entry {dtype, shape, data_offsets}.
func readTensorInfo(dec *json.Decoder) (t Tensor, begin, end uint64, err error) {
	var haveDType, haveShape, haveOffsets bool
	err = readObject(dec, func(key string) error {
		switch key {
		case "dtype":
			s, err := readString(dec)
			if err != nil {
				return fmt.Errorf("dtype: %w", err)
			}
			t.DType = DType(s)
			if !t.DType.Valid() {
				return fmt.Errorf("dtype %q: unknown", s)
			}
			haveDType = true
		case "shape":
			dims, err := readUints(dec, "shape")
			if err != nil {
				return err
			}
			t.Shape = make([]int, len(dims))
			for i, d := range dims {
				t.Shape[i] = int(d)
			}
			haveShape = true
		case "data_offsets":
			offs, err := readUints(dec, "data_offsets")
			if err != nil {
				return err
			}
			if len(offs) != 2 {
				return fmt.Errorf("data_offsets: %d numbers, want 2", len(offs))
			}
			begin, end = offs[0], offs[1]
			if begin > end {
				return fmt.Errorf("data_offsets [%d, %d]: begin after end", begin, end)
			}
			haveOffsets = true
		default:
			return fmt.Errorf("unknown field %q", key)
		}
		return nil
	})
	if err != nil {
		return t, 0, 0, err
	}
	switch {
	case !haveDType:
		err = errors.New("missing field dtype")
	case !haveShape:
		err = errors.New("missing field shape")
	case !haveOffsets:
		err = errors.New("missing field data_offsets")
	}
	return t, begin, end, err
}

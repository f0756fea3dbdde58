package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/smile-vplm/smile/model"
)

// FromFloat32 makes an F32 tensor of v with the given shape (data copied).
func FromFloat32(name string, shape []int, v []float32) Tensor {
	return Tensor{Name: name, DType: F32, Shape: slices.Clone(shape), Data: Float32Bytes(v)}
}

// FromBytes makes a one-dimensional U8 tensor holding b (not copied).
func FromBytes(name string, b []byte) Tensor {
	return Tensor{Name: name, DType: U8, Shape: []int{len(b)}, Data: b}
}

// Write writes tensors and meta as a safetensors file. The output depends
// only on the input: tensors are laid out in name order, metadata keys are
// sorted, and the header is padded with spaces to a multiple of 8 bytes. An
// invalid tensor (unknown dtype, negative dimension, data length that does
// not match the shape, empty or duplicate name) is an error wrapping
// model.ErrBadInput and nothing is written.
func Write(w io.Writer, tensors []Tensor, meta map[string]string) error {
	ts := slices.Clone(tensors)
	slices.SortFunc(ts, func(a, b Tensor) int { return cmpString(a.Name, b.Name) })
	for i, t := range ts {
		if t.Name == "" || t.Name == MetadataKey {
			return fmt.Errorf("%w: safetensors: write: invalid tensor name %q", model.ErrBadInput, t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return fmt.Errorf("%w: safetensors: write: duplicate tensor %q", model.ErrBadInput, t.Name)
		}
		if !t.DType.Valid() {
			return fmt.Errorf("%w: safetensors: write: tensor %q: unknown dtype %q", model.ErrBadInput, t.Name, t.DType)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("%w: safetensors: write: tensor %q: negative dimension in shape %v", model.ErrBadInput, t.Name, t.Shape)
			}
		}
		if n, ok := byteSize(t.Shape, t.DType.Size()); !ok || n != uint64(len(t.Data)) {
			return fmt.Errorf("%w: safetensors: write: tensor %q: shape %v of %s needs %s bytes, have %d",
				model.ErrBadInput, t.Name, t.Shape, t.DType, sizeString(n, ok), len(t.Data))
		}
	}

	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			h.WriteByte(',')
		}
		first = false
	}
	if len(meta) > 0 {
		sep()
		writeQuoted(&h, MetadataKey)
		h.WriteString(":{")
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			writeQuoted(&h, k)
			h.WriteByte(':')
			writeQuoted(&h, meta[k])
		}
		h.WriteByte('}')
	}
	var off uint64
	for _, t := range ts {
		sep()
		writeQuoted(&h, t.Name)
		h.WriteString(`:{"dtype":`)
		writeQuoted(&h, string(t.DType))
		h.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		end := off + uint64(len(t.Data))
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	if h.Len() > MaxHeaderSize {
		return fmt.Errorf("%w: safetensors: write: header of %d bytes exceeds %d", model.ErrBadInput, h.Len(), MaxHeaderSize)
	}

	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(h.Len()))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if _, err := w.Write(h.Bytes()); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	for _, t := range ts {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write: tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeQuoted writes s as a JSON string without HTML escaping, so names keep
// their bytes as other writers produce them.
func writeQuoted(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}

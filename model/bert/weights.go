package bert

import (
	"fmt"
)

// Names of the tensors in a SMILE BERT backbone file. Dense weights are
// stored [in, out] (already transposed from HF's [out, in]) so every GEMM of
// the forward pass is a plain x*W, and each layer's query, key and value
// weights are fused column-wise into one [hidden, 3*hidden] matrix so one
// GEMM over all rows computes all three.
const (
	tWord      = "embeddings.word"       // [vocab, hidden]
	tPosition  = "embeddings.position"   // [max_positions, hidden]
	tTokenType = "embeddings.token_type" // [type_vocab, hidden]
	tEmbGamma  = "embeddings.ln.gamma"   // [hidden]
	tEmbBeta   = "embeddings.ln.beta"    // [hidden]
	tPoolW     = "pooler.weight"         // [hidden, hidden]
	tPoolB     = "pooler.bias"           // [hidden]
)

// layerTensor names tensor what of layer l ("qkv.weight", ...).
func layerTensor(l int, what string) string { return fmt.Sprintf("layer.%d.%s", l, what) }

// tensorSpec is one tensor of the SMILE layout with its shape.
type tensorSpec struct {
	name  string
	shape []int
}

// specs lists every tensor of the SMILE layout for cfg, in load order.
func specs(cfg Config) []tensorSpec {
	H, I := cfg.Hidden, cfg.Intermediate
	s := []tensorSpec{
		{tWord, []int{cfg.VocabSize, H}},
		{tPosition, []int{cfg.MaxPositions, H}},
		{tTokenType, []int{cfg.TypeVocabSize, H}},
		{tEmbGamma, []int{H}},
		{tEmbBeta, []int{H}},
	}
	for l := range cfg.Layers {
		s = append(s,
			tensorSpec{layerTensor(l, "qkv.weight"), []int{H, 3 * H}},
			tensorSpec{layerTensor(l, "qkv.bias"), []int{3 * H}},
			tensorSpec{layerTensor(l, "attn_out.weight"), []int{H, H}},
			tensorSpec{layerTensor(l, "attn_out.bias"), []int{H}},
			tensorSpec{layerTensor(l, "attn_ln.gamma"), []int{H}},
			tensorSpec{layerTensor(l, "attn_ln.beta"), []int{H}},
			tensorSpec{layerTensor(l, "ffn_in.weight"), []int{H, I}},
			tensorSpec{layerTensor(l, "ffn_in.bias"), []int{I}},
			tensorSpec{layerTensor(l, "ffn_out.weight"), []int{I, H}},
			tensorSpec{layerTensor(l, "ffn_out.bias"), []int{H}},
			tensorSpec{layerTensor(l, "ffn_ln.gamma"), []int{H}},
			tensorSpec{layerTensor(l, "ffn_ln.beta"), []int{H}},
		)
	}
	return append(s, tensorSpec{tPoolW, []int{H, H}}, tensorSpec{tPoolB, []int{H}})
}

// getter returns a tensor as float32, checking its shape.
type getter func(name string, shape ...int) ([]float32, error)

// checker reports what the getter would fail with for name and shape,
// without decoding or allocating.
type checker func(name string, shape ...int) error

// transpose returns the [cols, rows] transpose of the row-major [rows, cols] w.
func transpose(w []float32, rows, cols int) []float32 {
	t := make([]float32, len(w))
	for i := range rows {
		for j, x := range w[i*cols : (i+1)*cols] {
			t[j*rows+i] = x
		}
	}
	return t
}

// fromHF converts HF-layout tensors (read through get, names without the
// "bert." prefix) into the SMILE layout, calling put for each tensor in
// specs order.
func fromHF(cfg Config, get getter, put func(name string, shape []int, v []float32) error) error {
	H, I := cfg.Hidden, cfg.Intermediate
	copyT := func(dst, src string, shape ...int) error {
		v, err := get(src, shape...)
		if err != nil {
			return err
		}
		return put(dst, shape, v)
	}
	// dense returns HF Linear weight src ([out, in]) as [in, out].
	dense := func(src string, out, in int) ([]float32, error) {
		w, err := get(src+".weight", out, in)
		if err != nil {
			return nil, err
		}
		return transpose(w, out, in), nil
	}
	ln := func(dstPrefix, src string) error {
		if err := copyT(dstPrefix+".gamma", src+".weight", H); err != nil {
			return err
		}
		return copyT(dstPrefix+".beta", src+".bias", H)
	}
	linear := func(dst, src string, out, in int) error {
		w, err := dense(src, out, in)
		if err != nil {
			return err
		}
		if err := put(dst+".weight", []int{in, out}, w); err != nil {
			return err
		}
		return copyT(dst+".bias", src+".bias", out)
	}

	if err := copyT(tWord, "embeddings.word_embeddings.weight", cfg.VocabSize, H); err != nil {
		return err
	}
	if err := copyT(tPosition, "embeddings.position_embeddings.weight", cfg.MaxPositions, H); err != nil {
		return err
	}
	if err := copyT(tTokenType, "embeddings.token_type_embeddings.weight", cfg.TypeVocabSize, H); err != nil {
		return err
	}
	if err := ln("embeddings.ln", "embeddings.LayerNorm"); err != nil {
		return err
	}
	for l := range cfg.Layers {
		p := fmt.Sprintf("encoder.layer.%d.", l)
		// Read all three parts before sizing the fused tensors by H, so a
		// source that lacks them fails before anything is allocated for them.
		var ws, bs [3][]float32
		for k, part := range []string{"query", "key", "value"} {
			var err error
			if ws[k], err = get(p+"attention.self."+part+".weight", H, H); err != nil {
				return err
			}
			if bs[k], err = get(p+"attention.self."+part+".bias", H); err != nil {
				return err
			}
		}
		qkvW := make([]float32, H*3*H)
		qkvB := make([]float32, 3*H)
		for k, w := range ws {
			// HF [out, in] -> column block k of the [in, 3*out] fused matrix.
			for o := range H {
				for i, x := range w[o*H : (o+1)*H] {
					qkvW[i*3*H+k*H+o] = x
				}
			}
			copy(qkvB[k*H:], bs[k])
		}
		if err := put(layerTensor(l, "qkv.weight"), []int{H, 3 * H}, qkvW); err != nil {
			return err
		}
		if err := put(layerTensor(l, "qkv.bias"), []int{3 * H}, qkvB); err != nil {
			return err
		}
		if err := linear(layerTensor(l, "attn_out"), p+"attention.output.dense", H, H); err != nil {
			return err
		}
		if err := ln(layerTensor(l, "attn_ln"), p+"attention.output.LayerNorm"); err != nil {
			return err
		}
		if err := linear(layerTensor(l, "ffn_in"), p+"intermediate.dense", I, H); err != nil {
			return err
		}
		if err := linear(layerTensor(l, "ffn_out"), p+"output.dense", H, I); err != nil {
			return err
		}
		if err := ln(layerTensor(l, "ffn_ln"), p+"output.LayerNorm"); err != nil {
			return err
		}
	}
	return linear("pooler", "pooler.dense", H, H)
}

// Package bert is the BERT backbone family: Hugging Face BERT checkpoints
// converted to SMILE's backbone file format, and a forward pass that runs on
// any gpu.Device over packed, ragged batches (no padding is ever computed).
//
// Converting: ConvertHF reads an HF directory (config.json, vocab.txt,
// model.safetensors) and writes a backbone file whose weights are already
// laid out for the forward pass: dense weights stored [in, out] and each
// layer's query, key and value fused into one [hidden, 3*hidden] matrix.
// Load uploads such a file's weights to a device once.
//
// The forward pass (Embed, RunLayers, Pool) is BERT's post-LN encoder:
//
//	h0 = LN(word[id] + position[i] + token_type[0])
//	a  = LN(h + Attention(h Wqkv + bqkv) Wo + bo)
//	h' = LN(a + act(a Wi + bi) Wo2 + bo2)
//	pooled = tanh(h[CLS] Wp + bp)
//
// Every step is a device call over all rows of the batch; scratch memory
// grows to the largest batch seen and is reused, so a warm model allocates
// no device memory per call.
//
// NewRandom, RandomHF and WriteHFDir make BERTs of any geometry with
// deterministic random weights, for benchmarks and tests. The parity test
// checks the forward pass against scripts/bert_reference.py, an independent
// float64 torch implementation, on testdata/bert/tiny.
package bert

package bert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model/safetensors"
)

// Random weights: each tensor draws from its own stream, seeded by the seed
// and the tensor's name, so the weights of one tensor do not depend on the
// geometry of the others. Dense weights have standard deviation
// 1/sqrt(fan_in) so activations keep unit scale through any depth and
// attention is far from uniform (a test that cannot tell attention from an
// average is no test); LayerNorm gains are near 1 and biases small but
// non-zero, so every parameter shows in the output.

type hfTensor struct {
	name  string
	shape []int
	std   float64
	mean  float64
}

func hfSpecs(cfg Config) []hfTensor {
	H, I := cfg.Hidden, cfg.Intermediate
	invH, invI := 1/math.Sqrt(float64(H)), 1/math.Sqrt(float64(I))
	s := []hfTensor{
		{"embeddings.word_embeddings.weight", []int{cfg.VocabSize, H}, 0.5, 0},
		{"embeddings.position_embeddings.weight", []int{cfg.MaxPositions, H}, 0.5, 0},
		{"embeddings.token_type_embeddings.weight", []int{cfg.TypeVocabSize, H}, 0.5, 0},
		{"embeddings.LayerNorm.weight", []int{H}, 0.1, 1},
		{"embeddings.LayerNorm.bias", []int{H}, 0.1, 0},
	}
	for l := range cfg.Layers {
		p := fmt.Sprintf("encoder.layer.%d.", l)
		s = append(s,
			hfTensor{p + "attention.self.query.weight", []int{H, H}, invH, 0},
			hfTensor{p + "attention.self.query.bias", []int{H}, 0.1, 0},
			hfTensor{p + "attention.self.key.weight", []int{H, H}, invH, 0},
			hfTensor{p + "attention.self.key.bias", []int{H}, 0.1, 0},
			hfTensor{p + "attention.self.value.weight", []int{H, H}, invH, 0},
			hfTensor{p + "attention.self.value.bias", []int{H}, 0.1, 0},
			hfTensor{p + "attention.output.dense.weight", []int{H, H}, invH, 0},
			hfTensor{p + "attention.output.dense.bias", []int{H}, 0.1, 0},
			hfTensor{p + "attention.output.LayerNorm.weight", []int{H}, 0.1, 1},
			hfTensor{p + "attention.output.LayerNorm.bias", []int{H}, 0.1, 0},
			hfTensor{p + "intermediate.dense.weight", []int{I, H}, invH, 0},
			hfTensor{p + "intermediate.dense.bias", []int{I}, 0.1, 0},
			hfTensor{p + "output.dense.weight", []int{H, I}, invI, 0},
			hfTensor{p + "output.dense.bias", []int{H}, 0.1, 0},
			hfTensor{p + "output.LayerNorm.weight", []int{H}, 0.1, 1},
			hfTensor{p + "output.LayerNorm.bias", []int{H}, 0.1, 0},
		)
	}
	return append(s,
		hfTensor{"pooler.dense.weight", []int{H, H}, invH, 0},
		hfTensor{"pooler.dense.bias", []int{H}, 0.1, 0},
	)
}

func (t hfTensor) generate(seed int64) []float32 {
	h := fnv.New64a()
	h.Write([]byte(t.name))
	r := rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
	v := make([]float32, numElems(t.shape))
	for i := range v {
		v[i] = float32(t.mean + t.std*r.NormFloat64())
	}
	return v
}

// RandomHF returns a random BERT of geometry cfg in Hugging Face layout and
// naming (no "bert." prefix), the same for the same cfg and seed.
func RandomHF(cfg Config, seed int64) ([]safetensors.Tensor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sp := hfSpecs(cfg)
	out := make([]safetensors.Tensor, len(sp))
	for i, t := range sp {
		out[i] = safetensors.FromFloat32(t.name, t.shape, t.generate(seed))
	}
	return out, nil
}

// NewRandom builds a random BERT of geometry cfg on dev: the weights of
// RandomHF(cfg, seed) and the vocabulary of RandomVocab, without going
// through a file.
func NewRandom(dev gpu.Device, cfg Config, seed int64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hf := map[string][]float32{}
	for _, t := range hfSpecs(cfg) {
		hf[t.name] = t.generate(seed)
	}
	smile := map[string][]float32{}
	err := fromHF(cfg, mapGetter(hf), func(name string, _ []int, v []float32) error {
		smile[name] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	clear(hf)
	return build(dev, cfg, fmt.Sprintf("random-%d", seed), RandomVocab(cfg.VocabSize), mapChecker(smile), mapGetter(smile))
}

func mapChecker(m map[string][]float32) checker {
	get := mapGetter(m)
	return func(name string, shape ...int) error {
		_, err := get(name, shape...)
		return err
	}
}

// mapGetter serves tensors from memory; shapes were fixed by whoever filled
// the map, so only the element count is checked.
func mapGetter(m map[string][]float32) getter {
	return func(name string, shape ...int) ([]float32, error) {
		v, ok := m[name]
		if !ok || len(v) != numElems(shape) {
			return nil, fmt.Errorf("bert: random tensor %q: missing or of %d elements, want shape %v", name, len(v), shape)
		}
		return v, nil
	}
}

// handVocab is the start of RandomVocab: BERT's special tokens, then a few
// common English words, word pieces and letters, so tests can tokenize
// readable text.
var handVocab = []string{
	"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
	".", ",", "!", "?", "'", "-",
	"the", "a", "an", "is", "was", "of", "and", "to", "in", "it", "this", "that", "for", "on", "with",
	"i", "you", "he", "she", "we", "they", "not", "are", "have", "very", "really",
	"good", "bad", "great", "movie", "film", "book", "food", "service", "love", "hate", "like",
	"time", "day", "one", "two", "new", "old", "happy", "sad", "play", "run", "walk", "talk",
	"hello", "world", "smile", "model", "text", "word", "cat", "dog", "un",
	"##s", "##ed", "##ing", "##ly", "##er", "##est", "##able", "##n",
	"b", "c", "d", "e", "f", "g", "h", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z",
}

// RandomVocab returns a WordPiece vocab.txt of exactly size tokens (size must
// be at least 5, for the special tokens): handVocab, cut or padded with
// [unusedN] entries as in BERT's own vocabulary.
func RandomVocab(size int) []byte {
	var b bytes.Buffer
	for i := range max(size, 5) {
		if i < len(handVocab) {
			b.WriteString(handVocab[i])
		} else {
			fmt.Fprintf(&b, "[unused%d]", i-len(handVocab))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// hfConfigJSON is config.json as Hugging Face writes it for a BertModel.
func hfConfigJSON(cfg Config) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"architectures":                []string{"BertModel"},
		"model_type":                   "bert",
		"vocab_size":                   cfg.VocabSize,
		"hidden_size":                  cfg.Hidden,
		"num_hidden_layers":            cfg.Layers,
		"num_attention_heads":          cfg.Heads,
		"intermediate_size":            cfg.Intermediate,
		"max_position_embeddings":      cfg.MaxPositions,
		"type_vocab_size":              cfg.TypeVocabSize,
		"layer_norm_eps":               cfg.LayerNormEps,
		"hidden_act":                   cfg.HiddenAct,
		"position_embedding_type":      "absolute",
		"hidden_dropout_prob":          0.1,
		"attention_probs_dropout_prob": 0.1,
		"initializer_range":            0.02,
		"pad_token_id":                 0,
	}, "", "  ")
}

// WriteHFDir writes a random BERT (RandomHF, RandomVocab) as a Hugging Face
// model directory: config.json, tokenizer_config.json, vocab.txt and
// model.safetensors.
func WriteHFDir(dir string, cfg Config, seed int64) error {
	tensors, err := RandomHF(cfg, seed)
	if err != nil {
		return err
	}
	cj, err := hfConfigJSON(cfg)
	if err != nil {
		return fmt.Errorf("bert: %w", err)
	}
	tc, err := json.Marshal(map[string]any{
		"do_lower_case": cfg.DoLowerCase, "strip_accents": cfg.StripAccents,
		"tokenize_chinese_chars": cfg.TokenizeChineseChars,
	})
	if err != nil {
		return fmt.Errorf("bert: %w", err)
	}
	var st bytes.Buffer
	if err := safetensors.Write(&st, tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bert: %w", err)
	}
	for name, data := range map[string][]byte{
		HFConfigFile:          append(cj, '\n'),
		HFTokenizerConfigFile: append(tc, '\n'),
		HFVocabFile:           RandomVocab(cfg.VocabSize),
		HFWeightsFile:         st.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("bert: %w", err)
		}
	}
	return nil
}

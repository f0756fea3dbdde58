package bert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// Config is a BERT geometry, read from Hugging Face's config.json (the JSON
// field names are HF's, so a backbone file's smile.config parses the same
// way).
type Config struct {
	VocabSize     int     `json:"vocab_size"`
	Hidden        int     `json:"hidden_size"`
	Layers        int     `json:"num_hidden_layers"`
	Heads         int     `json:"num_attention_heads"`
	Intermediate  int     `json:"intermediate_size"`
	MaxPositions  int     `json:"max_position_embeddings"`
	TypeVocabSize int     `json:"type_vocab_size"`
	LayerNormEps  float64 `json:"layer_norm_eps"`
	HiddenAct     string  `json:"hidden_act"`
	// DoLowerCase, StripAccents and TokenizeChineseChars configure the
	// tokenizer as HF's BertTokenizer does (from tokenizer_config.json when
	// converting; HF's defaults are true, null and true).
	DoLowerCase          bool         `json:"do_lower_case"`
	StripAccents         StripAccents `json:"strip_accents"`
	TokenizeChineseChars bool         `json:"tokenize_chinese_chars"`
}

// StripAccents is HF's three-way strip_accents: JSON null (the default)
// strips accents exactly when lower-casing, true always, false never.
type StripAccents int8

// StripAccents values.
const (
	AccentsFollowLowerCase StripAccents = iota // null
	AccentsStrip                               // true
	AccentsKeep                                // false
)

// MarshalJSON writes null, true or false.
func (a StripAccents) MarshalJSON() ([]byte, error) {
	switch a {
	case AccentsFollowLowerCase:
		return []byte("null"), nil
	case AccentsStrip:
		return []byte("true"), nil
	case AccentsKeep:
		return []byte("false"), nil
	}
	return nil, fmt.Errorf("%w: bert config: strip_accents %d", model.ErrBadInput, int(a))
}

// UnmarshalJSON reads null, true or false.
func (a *StripAccents) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "null":
		*a = AccentsFollowLowerCase
	case "true":
		*a = AccentsStrip
	case "false":
		*a = AccentsKeep
	default:
		return fmt.Errorf("strip_accents: %s, want null, true or false", b)
	}
	return nil
}

func (a StripAccents) mode() tokenizer.AccentMode {
	switch a {
	case AccentsStrip:
		return tokenizer.AccentsStrip
	case AccentsKeep:
		return tokenizer.AccentsKeep
	}
	return tokenizer.AccentsFollowLowerCase
}

// Upper bounds of a geometry, each well above any published BERT, so that a
// corrupt or hostile file cannot make Load size huge tables (or the tensor
// list) from a few bytes of JSON.
const (
	MaxLayers        = 256
	MaxHidden        = 16384
	MaxIntermediate  = 65536
	MaxVocabSize     = 4 << 20
	MaxMaxPositions  = 65536
	MaxTypeVocabSize = 1024
)

// BaseConfig is bert-base-uncased's geometry.
func BaseConfig() Config {
	return Config{
		VocabSize: 30522, Hidden: 768, Layers: 12, Heads: 12, Intermediate: 3072,
		MaxPositions: 512, TypeVocabSize: 2, LayerNormEps: 1e-12, HiddenAct: "gelu", DoLowerCase: true,
		TokenizeChineseChars: true,
	}
}

// TinyConfig is a small geometry for tests and examples.
func TinyConfig() Config {
	return Config{
		VocabSize: 100, Hidden: 64, Layers: 3, Heads: 4, Intermediate: 128,
		MaxPositions: 64, TypeVocabSize: 2, LayerNormEps: 1e-12, HiddenAct: "gelu", DoLowerCase: true,
		TokenizeChineseChars: true,
	}
}

// activations maps HF's hidden_act names to device activations.
var activations = map[string]gpu.Activation{
	"gelu":              gpu.ActGELU,
	"gelu_new":          gpu.ActGELUTanh,
	"gelu_pytorch_tanh": gpu.ActGELUTanh,
	"relu":              gpu.ActReLU,
}

// Validate checks that the geometry is usable; the error names the field.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
		max  int
	}{
		{"vocab_size", c.VocabSize, MaxVocabSize}, {"hidden_size", c.Hidden, MaxHidden},
		{"num_hidden_layers", c.Layers, MaxLayers}, {"num_attention_heads", c.Heads, c.Hidden},
		{"intermediate_size", c.Intermediate, MaxIntermediate},
		{"max_position_embeddings", c.MaxPositions, MaxMaxPositions}, {"type_vocab_size", c.TypeVocabSize, MaxTypeVocabSize},
	} {
		if f.v <= 0 || f.v > f.max {
			return fmt.Errorf("%w: bert config: %s = %d, want 1..%d", model.ErrBadModelFile, f.name, f.v, f.max)
		}
	}
	if c.Hidden%c.Heads != 0 {
		return fmt.Errorf("%w: bert config: num_attention_heads = %d does not divide hidden_size = %d",
			model.ErrBadModelFile, c.Heads, c.Hidden)
	}
	if c.MaxPositions < 2 {
		return fmt.Errorf("%w: bert config: max_position_embeddings = %d leaves no room for [CLS] and [SEP]",
			model.ErrBadModelFile, c.MaxPositions)
	}
	if !(c.LayerNormEps > 0 && c.LayerNormEps < 1) {
		return fmt.Errorf("%w: bert config: layer_norm_eps = %g, want in (0, 1)", model.ErrBadModelFile, c.LayerNormEps)
	}
	if c.StripAccents < AccentsFollowLowerCase || c.StripAccents > AccentsKeep {
		return fmt.Errorf("%w: bert config: strip_accents = %d", model.ErrBadModelFile, c.StripAccents)
	}
	if _, ok := activations[c.HiddenAct]; !ok {
		return fmt.Errorf("%w: bert config: hidden_act = %q, want gelu, gelu_new, gelu_pytorch_tanh or relu",
			model.ErrBadModelFile, c.HiddenAct)
	}
	return nil
}

func (c Config) act() gpu.Activation { return activations[c.HiddenAct] }

func (c Config) info(name string) model.Info {
	return model.Info{
		Family: Family, Name: name, Layers: c.Layers, Hidden: c.Hidden, Heads: c.Heads,
		Intermediate: c.Intermediate, MaxPositions: c.MaxPositions, VocabSize: c.VocabSize, OutputDim: c.Hidden,
	}
}

// hfConfig mirrors config.json with pointers so a missing required field is
// told apart from a zero one.
type hfConfig struct {
	VocabSize     *int          `json:"vocab_size"`
	Hidden        *int          `json:"hidden_size"`
	Layers        *int          `json:"num_hidden_layers"`
	Heads         *int          `json:"num_attention_heads"`
	Intermediate  *int          `json:"intermediate_size"`
	MaxPositions  *int          `json:"max_position_embeddings"`
	TypeVocabSize *int          `json:"type_vocab_size"`
	LayerNormEps  *float64      `json:"layer_norm_eps"`
	HiddenAct     *string       `json:"hidden_act"`
	DoLowerCase   *bool         `json:"do_lower_case"`
	StripAccents  *StripAccents `json:"strip_accents"`
	ChineseChars  *bool         `json:"tokenize_chinese_chars"`
	PositionType  *string       `json:"position_embedding_type"`
	ModelType     *string       `json:"model_type"`
}

// ParseConfig parses a Hugging Face BERT config.json (other fields are
// ignored) and validates it. type_vocab_size defaults to 2, layer_norm_eps
// to 1e-12, hidden_act to "gelu", do_lower_case and tokenize_chinese_chars
// to true and strip_accents to null, as in HF. Errors
// wrap model.ErrBadModelFile and name the field.
func ParseConfig(data []byte) (Config, error) {
	var h hfConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&h); err != nil {
		return Config{}, fmt.Errorf("%w: bert config: %v", model.ErrBadModelFile, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, fmt.Errorf("%w: bert config: trailing data after the JSON object", model.ErrBadModelFile)
	}
	c := Config{TypeVocabSize: 2, LayerNormEps: 1e-12, HiddenAct: "gelu", DoLowerCase: true, TokenizeChineseChars: true}
	for _, f := range []struct {
		name string
		src  *int
		dst  *int
	}{
		{"vocab_size", h.VocabSize, &c.VocabSize}, {"hidden_size", h.Hidden, &c.Hidden},
		{"num_hidden_layers", h.Layers, &c.Layers}, {"num_attention_heads", h.Heads, &c.Heads},
		{"intermediate_size", h.Intermediate, &c.Intermediate}, {"max_position_embeddings", h.MaxPositions, &c.MaxPositions},
	} {
		if f.src == nil {
			return Config{}, fmt.Errorf("%w: bert config: %s: missing", model.ErrBadModelFile, f.name)
		}
		*f.dst = *f.src
	}
	if h.TypeVocabSize != nil {
		c.TypeVocabSize = *h.TypeVocabSize
	}
	if h.LayerNormEps != nil {
		c.LayerNormEps = *h.LayerNormEps
	}
	if h.HiddenAct != nil {
		c.HiddenAct = *h.HiddenAct
	}
	if h.DoLowerCase != nil {
		c.DoLowerCase = *h.DoLowerCase
	}
	if h.StripAccents != nil {
		c.StripAccents = *h.StripAccents
	}
	if h.ChineseChars != nil {
		c.TokenizeChineseChars = *h.ChineseChars
	}
	if h.ModelType != nil && *h.ModelType != "bert" {
		return Config{}, fmt.Errorf("%w: bert config: model_type = %q, want \"bert\"", model.ErrBadModelFile, *h.ModelType)
	}
	if h.PositionType != nil && *h.PositionType != "absolute" {
		return Config{}, fmt.Errorf("%w: bert config: position_embedding_type = %q, only \"absolute\" is supported",
			model.ErrBadModelFile, *h.PositionType)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// macsPerToken is the multiply-adds per token of the encoder layers for
// sequences of seqLen tokens (dense layers plus attention scores and mixing).
func (c Config) macsPerToken(seqLen int) int {
	H, I := c.Hidden, c.Intermediate
	return c.Layers * (3*H*H + H*H + 2*H*I + 2*seqLen*H)
}

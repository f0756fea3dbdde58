package bert

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/model"
)

func TestParseConfig(t *testing.T) {
	base := `{"vocab_size":30522,"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,` +
		`"intermediate_size":3072,"max_position_embeddings":512,"model_type":"bert","architectures":["BertModel"]}`
	c, err := ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c != BaseConfig() {
		t.Errorf("defaults: got %+v, want %+v", c, BaseConfig())
	}
	cj, err := hfConfigJSON(TinyConfig())
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ParseConfig(cj); err != nil || c != TinyConfig() {
		t.Errorf("round trip: %+v, %v", c, err)
	}
	// A Config marshals to JSON that parses back to itself (the stored smile.config).
	j, _ := json.Marshal(TinyConfig())
	if c, err := ParseConfig(j); err != nil || c != TinyConfig() {
		t.Errorf("Config JSON round trip: %+v, %v", c, err)
	}

	set := func(kv string) string { return strings.Replace(base, `{`, `{`+kv+`,`, 1) }
	cases := []struct{ name, data, field string }{
		{"not JSON", `{"hidden_size":`, "bert config"},
		{"array", `[]`, "bert config"},
		{"trailing", base + `{}`, "trailing"},
		{"missing hidden", strings.Replace(base, `"hidden_size":768,`, ``, 1), "hidden_size: missing"},
		{"missing layers", strings.Replace(base, `"num_hidden_layers":12,`, ``, 1), "num_hidden_layers: missing"},
		{"missing vocab", strings.Replace(base, `"vocab_size":30522,`, ``, 1), "vocab_size: missing"},
		{"string size", strings.Replace(base, `768`, `"768"`, 1), "hidden_size"},
		{"zero heads", strings.Replace(base, `"num_attention_heads":12`, `"num_attention_heads":0`, 1), "num_attention_heads"},
		{"heads do not divide", strings.Replace(base, `"num_attention_heads":12`, `"num_attention_heads":7`, 1), "does not divide"},
		{"negative intermediate", strings.Replace(base, `3072`, `-1`, 1), "intermediate_size"},
		{"one position", strings.Replace(base, `"max_position_embeddings":512`, `"max_position_embeddings":1`, 1), "max_position_embeddings"},
		{"zero type vocab", set(`"type_vocab_size":0`), "type_vocab_size"},
		{"bad eps", set(`"layer_norm_eps":0`), "layer_norm_eps"},
		{"bad act", set(`"hidden_act":"swish"`), "hidden_act"},
		{"relative positions", set(`"position_embedding_type":"relative_key"`), "position_embedding_type"},
		{"roberta", strings.Replace(base, `"model_type":"bert"`, `"model_type":"roberta"`, 1), "model_type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.data))
			if !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("err = %v, want ErrBadModelFile naming %q", err, c.field)
			}
		})
	}
	for _, act := range []string{"gelu", "gelu_new", "relu", "gelu_pytorch_tanh"} {
		if _, err := ParseConfig([]byte(set(`"hidden_act":"` + act + `"`))); err != nil {
			t.Errorf("hidden_act %s: %v", act, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	cj, _ := hfConfigJSON(TinyConfig())
	f.Add(cj)
	f.Add([]byte(`{"hidden_size":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("error %v does not wrap ErrBadModelFile", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}

func TestConfigBounds(t *testing.T) {
	largest := Config{
		VocabSize: MaxVocabSize, Hidden: MaxHidden, Layers: MaxLayers, Heads: MaxHidden, Intermediate: MaxIntermediate,
		MaxPositions: MaxMaxPositions, TypeVocabSize: MaxTypeVocabSize, LayerNormEps: 1e-12, HiddenAct: "gelu",
	}
	if err := largest.Validate(); err != nil {
		t.Fatalf("largest geometry rejected: %v", err)
	}
	cases := []struct {
		field string
		edit  func(*Config)
	}{
		{"num_hidden_layers", func(c *Config) { c.Layers = MaxLayers + 1 }},
		{"num_hidden_layers", func(c *Config) { c.Layers = 1 << 36 }},
		{"hidden_size", func(c *Config) { c.Hidden = MaxHidden * 2 }},
		{"intermediate_size", func(c *Config) { c.Intermediate = MaxIntermediate + 1 }},
		{"vocab_size", func(c *Config) { c.VocabSize = MaxVocabSize + 1 }},
		{"max_position_embeddings", func(c *Config) { c.MaxPositions = MaxMaxPositions + 1 }},
		{"type_vocab_size", func(c *Config) { c.TypeVocabSize = MaxTypeVocabSize + 1 }},
		{"num_attention_heads", func(c *Config) { c.Hidden, c.Heads = 64, 128 }},
		{"strip_accents", func(c *Config) { c.StripAccents = 7 }},
	}
	for _, c := range cases {
		cfg := largest
		c.edit(&cfg)
		if err := cfg.Validate(); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: %v, want ErrBadModelFile naming %s", cfg, err, c.field)
		}
	}
	base := `{"vocab_size":30522,"hidden_size":768,"num_hidden_layers":68719476736,"num_attention_heads":12,` +
		`"intermediate_size":3072,"max_position_embeddings":512}`
	if _, err := ParseConfig([]byte(base)); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), "num_hidden_layers") {
		t.Errorf("huge layers: %v", err)
	}
}

func TestConfigTokenizerFields(t *testing.T) {
	base := `{"vocab_size":100,"hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,` +
		`"intermediate_size":128,"max_position_embeddings":64`
	cases := []struct {
		extra   string
		accents StripAccents
		chinese bool
	}{
		{``, AccentsFollowLowerCase, true},
		{`,"strip_accents":null`, AccentsFollowLowerCase, true},
		{`,"strip_accents":true`, AccentsStrip, true},
		{`,"strip_accents":false,"tokenize_chinese_chars":false`, AccentsKeep, false},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(base + c.extra + `}`))
		if err != nil {
			t.Fatalf("%s: %v", c.extra, err)
		}
		if cfg.StripAccents != c.accents || cfg.TokenizeChineseChars != c.chinese {
			t.Errorf("%s: strip_accents %d, tokenize_chinese_chars %v", c.extra, cfg.StripAccents, cfg.TokenizeChineseChars)
		}
		// The stored smile.config round-trips.
		j, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseConfig(j); err != nil || back != cfg {
			t.Errorf("%s: round trip through %s: %+v, %v", c.extra, j, back, err)
		}
	}
	if _, err := ParseConfig([]byte(base + `,"strip_accents":"yes"}`)); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), "strip_accents") {
		t.Errorf("strip_accents \"yes\": %v", err)
	}
}

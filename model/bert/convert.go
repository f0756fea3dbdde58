package bert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/safetensors"
)

// Files of a Hugging Face model directory that ConvertHF reads.
const (
	HFConfigFile          = "config.json"
	HFVocabFile           = "vocab.txt"
	HFWeightsFile         = "model.safetensors"
	HFTokenizerConfigFile = "tokenizer_config.json" // optional: do_lower_case, strip_accents, tokenize_chinese_chars
)

// ConvertHF reads a Hugging Face BERT directory (config.json, vocab.txt,
// model.safetensors and optionally tokenizer_config.json) and writes it to w
// as a SMILE backbone file. Tensor names may carry the "bert." prefix of
// BertFor* checkpoints; LayerNorm parameters may be called weight/bias or
// gamma/beta. Errors wrap model.ErrBadModelFile and name the file and the
// field or tensor at fault.
func ConvertHF(dir string, w io.Writer) error {
	cfgPath := filepath.Join(dir, HFConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return missingFile(cfgPath, err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	tcPath := filepath.Join(dir, HFTokenizerConfigFile)
	if raw, err := os.ReadFile(tcPath); err == nil {
		if err := applyTokenizerConfig(&cfg, raw); err != nil {
			return fmt.Errorf("%w: %s: %v", model.ErrBadModelFile, tcPath, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bert: %s: %w", tcPath, err)
	}
	vocabPath := filepath.Join(dir, HFVocabFile)
	vocab, err := os.ReadFile(vocabPath)
	if err != nil {
		return missingFile(vocabPath, err)
	}
	if _, err := newTokenizer(vocab, cfg); err != nil {
		return fmt.Errorf("%s: %w", vocabPath, err)
	}
	wPath := filepath.Join(dir, HFWeightsFile)
	if _, err := os.Stat(wPath); err != nil {
		return missingFile(wPath, err)
	}
	st, err := safetensors.Open(wPath)
	if err != nil {
		return err
	}
	defer st.Close()
	tensors, err := convertFile(cfg, st)
	if err != nil {
		return err
	}
	sum, err := fileSHA256(wPath)
	if err != nil {
		return err
	}
	name := filepath.Base(filepath.Clean(dir))
	source := fmt.Sprintf("huggingface dir %q, %s sha256:%s", name, HFWeightsFile, sum)
	return backbonefile.Write(w, Family, cfg.info(name), cfg, source, vocab, tensors)
}

// applyTokenizerConfig sets the tokenizer fields of cfg that
// tokenizer_config.json holds: do_lower_case, strip_accents (null, true or
// false; an explicit null means "follow do_lower_case") and
// tokenize_chinese_chars. Absent fields keep cfg's values.
func applyTokenizerConfig(cfg *Config, raw []byte) error {
	var tc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tc); err != nil {
		return err
	}
	for _, f := range []struct {
		key string
		dst any
	}{
		{"do_lower_case", &cfg.DoLowerCase},
		{"strip_accents", &cfg.StripAccents},
		{"tokenize_chinese_chars", &cfg.TokenizeChineseChars},
	} {
		v, ok := tc[f.key]
		if !ok {
			continue
		}
		if _, isBool := f.dst.(*bool); isBool && string(v) == "null" {
			// json would keep the default, while Python treats None as
			// false; reject the ambiguity rather than pick one silently.
			return fmt.Errorf("%s: null, want true or false", f.key)
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return fmt.Errorf("%s: %v", f.key, err)
		}
	}
	return nil
}

func missingFile(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: missing", model.ErrBadModelFile, path)
	}
	return fmt.Errorf("bert: %s: %w", path, err)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("bert: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("bert: %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// convertFile converts the HF tensors of st into SMILE-layout tensors.
func convertFile(cfg Config, st *safetensors.File) ([]safetensors.Tensor, error) {
	prefix := ""
	if !st.Has("embeddings.word_embeddings.weight") && st.Has("bert.embeddings.word_embeddings.weight") {
		prefix = "bert."
	}
	get := func(name string, shape ...int) ([]float32, error) {
		full := prefix + name
		if !st.Has(full) && strings.Contains(name, "LayerNorm.") {
			// Checkpoints from the TF era call LayerNorm parameters gamma/beta.
			alt := strings.NewReplacer("LayerNorm.weight", "LayerNorm.gamma", "LayerNorm.bias", "LayerNorm.beta").Replace(full)
			if st.Has(alt) {
				full = alt
			}
		}
		return st.Float32(full, shape...)
	}
	var out []safetensors.Tensor
	err := fromHF(cfg, get, func(name string, shape []int, v []float32) error {
		out = append(out, safetensors.FromFloat32(name, shape, v))
		return nil
	})
	return out, err
}

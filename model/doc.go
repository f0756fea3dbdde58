// Package model is SMILE's pure computation: the Backbone interface every
// pretrained encoder family implements (per-layer hidden states, running
// from any layer onward), the text-to-embedding pipeline on top of it, and
// vPLMs: a vPLM's trainable part (Params: an adapter and a head, stored as
// an fp16 blob) and the Runner that serves rows of many vPLMs in one forward
// pass over a shared backbone (vplm.go, params.go, paramsblob.go, runner.go).
// Sub-packages: tokenizer (SentencePiece-unigram, WordPiece), uselite
// (Universal Sentence Encoder Lite, imported from its TF.js package), bert
// (Hugging Face BERT), safetensors and backbonefile (SMILE's backbone format).
// It performs no networking and starts no actors; files are only read where
// a caller hands over a path.
package model

package tokenizer_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/smile-vplm/smile/model/tokenizer"
)

func ExampleSentencePiece_Encode() {
	f, err := os.Open("../../testdata/use-lite/vocab.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	sp, err := tokenizer.LoadSentencePieceJSON(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	ids, _ := sp.Encode("Hello world :)")
	for _, id := range ids {
		p, _ := sp.Piece(id)
		fmt.Printf("%d %s\n", id, p)
	}
	// Output:
	// 341 ▁H
	// 4125 ello
	// 311 ▁world
	// 658 ▁:)
}

func ExampleWordPiece_EncodeWithSpecial() {
	vocab := "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nhello\n,\n!\n"
	w, err := tokenizer.LoadWordPiece(strings.NewReader(vocab), tokenizer.DefaultWordPieceConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	toks, _ := w.Tokenize("Hello, unaffable world!")
	fmt.Println(toks)
	ids, _ := w.EncodeWithSpecial("Hello, unaffable world!", 5)
	fmt.Println(ids)
	// Output:
	// [hello , un ##aff ##able [UNK] !]
	// [2 8 9 5 3]
}

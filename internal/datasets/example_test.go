package datasets_test

import (
	"fmt"
	"strings"

	"github.com/smile-vplm/smile/internal/datasets"
)

func ExampleReadJSONL() {
	in := `{"text": "a wonderful film", "label": "pos"}
{"text": "", "label": "neg"}
`
	_, err := datasets.ReadJSONL(strings.NewReader(in), "reviews.jsonl", datasets.DefaultLoadOptions())
	fmt.Println(err)
	// Output: datasets: empty text (reviews.jsonl:2)
}

func ExampleSplit() {
	var ex []datasets.Example
	for i := range 50 {
		ex = append(ex, datasets.Example{Text: fmt.Sprint("text ", i), Label: []string{"a", "b"}[i%2], ID: fmt.Sprint(i)})
	}
	s := datasets.Split(ex, datasets.SplitSeed)
	fmt.Println(len(s.Train), len(s.Validation), len(s.Test), datasets.Count(s.Test).Labels)
	// Output: 38 6 6 map[a:3 b:3]
}

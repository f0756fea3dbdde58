package datasets

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzLoadJSONL(f *testing.F) {
	f.Add([]byte(`{"text":"a","label":"x","id":1}` + "\n" + `{"text":"b","label":2}`))
	f.Add([]byte("\ufeff{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\":\"\xff\",\"label\":\"y\"}"))
	f.Add([]byte(`{"text":null,"label":{}}`))
	f.Add([]byte("[]\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		opts := DefaultLoadOptions()
		opts.MaxBytes = 1 << 16
		ex, err := ReadJSONL(bytes.NewReader(b), "fuzz.jsonl", opts)
		checkLoaded(t, ex, err)
	})
}

func FuzzLoadCSV(f *testing.F) {
	f.Add([]byte("text,label,id\na,x,1\nb,y,2\n"))
	f.Add([]byte("label,text\n\"x\",\"multi\nline\"\ny,\"\"\"q\"\"\"\n"))
	f.Add([]byte("text\n\"unterminated"))
	f.Fuzz(func(t *testing.T, b []byte) {
		opts := DefaultLoadOptions()
		opts.MaxBytes = 1 << 16
		ex, err := ReadCSV(bytes.NewReader(b), "fuzz.csv", opts)
		checkLoaded(t, ex, err)
	})
}

// checkLoaded holds the loaders to their promises on any input.
func checkLoaded(t *testing.T, ex []Example, err error) {
	if err != nil {
		var le *LineError
		if errors.As(err, &le) && le.Line < 1 {
			t.Fatalf("line error at line %d: %v", le.Line, err)
		}
		return
	}
	labels := map[string]bool{}
	for _, e := range ex {
		if e.Text == "" || e.Label == "" {
			t.Fatalf("accepted an empty text or label: %+v", e)
		}
		labels[e.Label] = true
	}
	if len(labels) < 2 {
		t.Fatalf("accepted %d labels", len(labels))
	}
}

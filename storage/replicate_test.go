package storage

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestPutBlobs(t *testing.T) {
	s, _ := openTest(t)
	var datas [][]byte
	for i := range 300 {
		datas = append(datas, bytes.Repeat([]byte{byte(i)}, 130_000+i)) // ~39 MB: value log
	}
	datas = append(datas, []byte("small"), []byte("small"))
	ds, err := s.PutBlobs(datas)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if want := string(digestOf(datas[i])); d != want {
			t.Fatalf("digest %d: %s, want %s", i, d, want)
		}
		got, err := s.GetBlob(d)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("GetBlob %d: %v", i, err)
		}
	}
	if n := countPrefix(t, s, prefixPending); n != 301 {
		t.Fatalf("%d pending markers, want 301", n)
	}
	if ds, err := s.PutBlobs(nil); err != nil || len(ds) != 0 {
		t.Fatalf("PutBlobs(nil) = %v %v", ds, err)
	}
}

func TestPutBlobAsRepairs(t *testing.T) {
	s, _ := openTest(t)
	for _, size := range []int{5, 130_000} {
		data := bytes.Repeat([]byte("y"), size)
		d := string(digestOf(data))
		if err := s.PutBlobAs(d, data); err != nil {
			t.Fatal(err)
		}
		// A disk fault: the stored bytes no longer match.
		bad := bytes.Clone(data)
		bad[0] ^= 1
		rawSet(t, s, blobKey(Digest(d)), bad)
		_, err := s.GetBlob(d)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("GetBlob of a corrupt copy: %v", err)
		}
		// Wrong data is refused, and the bad copy stays until good data comes.
		err = s.PutBlobAs(d, bad)
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("PutBlobAs with wrong data: %v", err)
		}
		if err := s.PutBlobAs(d, data); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetBlob(d); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetBlob after repair: %v", err)
		}
		// PutBlob, unlike PutBlobAs, leaves a stored copy alone.
		if err := s.PutBlobAs(d, data); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"", "sha256:zz", fmt.Sprintf("sha256:%064X", 0xabc)} {
		if err := s.PutBlobAs(bad, nil); !errors.Is(err, ErrBadDigest) {
			t.Errorf("PutBlobAs(%q) = %v", bad, err)
		}
	}
}

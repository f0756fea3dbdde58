package uselite_test

import (
	"io"

	"github.com/smile-vplm/smile/model/uselite"
)

func writeFile(w io.Writer, cfg uselite.Config, ts []uselite.Tensor, vocab []byte) error {
	return uselite.WriteBackbone(w, cfg, ts, vocab)
}

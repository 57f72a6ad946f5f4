package front

import (
	_ "embed"
	"net/http"
)

// pageHTML is the live cluster page: one file of plain HTML and JavaScript,
// embedded in the binary, that fetches nothing from anywhere but this
// node.
//
//go:embed page/index.html
var pageHTML []byte

func (f *Front) page(w http.ResponseWriter, r *http.Request) string {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(pageHTML)
	return "ok"
}

// Command app is the example function the buildpack tests run beside the
// sidecar: it listens on $PORT and prints one JSON line per event it gets.
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		line, _ := json.Marshal(map[string]string{
			"method":           r.Method,
			"path":             r.URL.Path,
			"body":             string(body),
			"ce-specversion":   r.Header.Get("ce-specversion"),
			"ce-source":        r.Header.Get("ce-source"),
			"hottopic-topic":   r.Header.Get("Hottopic-Topic"),
			"hottopic-attempt": r.Header.Get("Hottopic-Delivery"),
		})
		os.Stdout.Write(append(line, '\n'))
		w.WriteHeader(http.StatusNoContent)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil))
}

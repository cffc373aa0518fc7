// The Go example: a small HTTP service. `GET /` answers with a greeting
// and a request ID, `GET /healthz` with `ok`. Its one dependency is
// vendored (vendor/, go.sum), so it builds offline:
//
//	CGO_ENABLED=0 go build -mod=vendor -trimpath -o dist/go-service .
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"

	"github.com/google/uuid"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from go-service (%s), request %s\n", runtime.Version(), uuid.New())
	})
	listener, err := net.Listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("go-service listening on %s", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}

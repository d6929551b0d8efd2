// Command fake-kubelet is a tiny stand-in for a kubelet, used by the apigate
// testbed (tests/testbed) so that `kubectl exec` works end-to-end against a
// real kube-apiserver 1.20 without a real kubelet or container runtime.
//
// What it mimics: the kubelet's HTTPS server endpoint
//
//	POST|GET /exec/{namespace}/{pod}/{container}?command=..&input=1&output=1&error=1&tty=0
//	POST|GET /exec/{namespace}/{pod}/{uid}/{container}?...
//
// which kube-apiserver's pods/exec subresource proxies to (upgrade-aware proxy
// to https://<node address>:<status.daemonEndpoints.kubeletEndpoint.Port>,
// see pkg/registry/core/pod/strategy.go streamLocation). The protocol side
// (SPDY/3.1 or WebSocket upgrade, channel.k8s.io v1..v4 sub-protocols, the
// stdin/stdout/stderr/error/resize streams and the final Status on the error
// stream) is NOT reimplemented here: it is the kubelet's own code,
// k8s.io/kubernetes/pkg/kubelet/cri/streaming/remotecommand.ServeExec, built
// from the same Debian kubernetes 1.20.2 source tree as the testbed's
// kube-apiserver. Only the "container runtime" is fake: the requested command
// runs as a plain host process (os/exec) with the stdin/stdout/stderr streams
// wired to it. Its exit code is reported like a real runtime's (kubectl exits
// with the same code).
//
// The child gets FAKE_KUBELET_NAMESPACE, FAKE_KUBELET_POD and
// FAKE_KUBELET_CONTAINER in its environment, so a test can check where an exec
// was routed, e.g. `kubectl exec p -- sh -c 'echo $FAKE_KUBELET_POD'`.
//
// Because it runs arbitrary commands, it requires client certificates signed by
// -client-ca-file (kube-apiserver presents --kubelet-client-certificate) unless
// -allow-unauthenticated is given. It listens on loopback only by default.
//
// GET /healthz answers "ok" (for readiness polling). Each exec is logged to
// stderr (client certificate CN, pod, command, streams, exit code).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	kubeletremotecommand "k8s.io/kubernetes/pkg/kubelet/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// hostExecutor implements kubeletremotecommand.Executor by running the command
// on the host instead of inside a container.
type hostExecutor struct {
	workDir string
}

func (e hostExecutor) ExecInContainer(name string, uid types.UID, container string, cmd []string,
	in io.Reader, out, stderr io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	if resize != nil {
		// No pty here; just drain terminal size updates (the sender blocks otherwise).
		go func() {
			for range resize {
			}
		}()
	}
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Dir = e.workDir
	ns, pod := splitPodFullName(name)
	c.Env = append(os.Environ(),
		"FAKE_KUBELET_NAMESPACE="+ns, "FAKE_KUBELET_POD="+pod, "FAKE_KUBELET_CONTAINER="+container)
	if out != nil {
		c.Stdout = out
	}
	if stderr != nil {
		c.Stderr = stderr
	} else if tty && out != nil {
		c.Stderr = out // with a tty, stderr is merged into stdout (as in a real pty)
	}
	var stdinPipe io.WriteCloser
	if in != nil {
		// Feed stdin ourselves rather than via c.Stdin: cmd.Wait would otherwise wait
		// for the client to close stdin even after the process has exited.
		p, err := c.StdinPipe()
		if err != nil {
			return err
		}
		stdinPipe = p
	}
	if err := c.Start(); err != nil {
		return err // e.g. executable not found; reported as an internal error
	}
	if stdinPipe != nil {
		go func() {
			io.Copy(stdinPipe, in)
			stdinPipe.Close()
		}()
	}
	err := c.Wait()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		// ServeExec turns an utilexec.ExitError into a NonZeroExitCode Status.
		return utilexec.CodeExitError{Err: err, Code: exitErr.ExitCode()}
	}
	return err
}

// splitPodFullName reverses the kubelet's "<pod>_<namespace>" pod full name.
func splitPodFullName(full string) (ns, pod string) {
	if i := strings.LastIndex(full, "_"); i >= 0 {
		return full[i+1:], full[:i]
	}
	return "", full
}

// loggingExecutor logs every exec with its outcome.
type loggingExecutor struct {
	next kubeletremotecommand.Executor
	who  string
	opts *kubeletremotecommand.Options
}

func (l loggingExecutor) ExecInContainer(name string, uid types.UID, container string, cmd []string,
	in io.Reader, out, stderr io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	start := time.Now()
	err := l.next.ExecInContainer(name, uid, container, cmd, in, out, stderr, tty, resize, timeout)
	res := "exit=0"
	var ee utilexec.ExitError
	if errors.As(err, &ee) {
		res = fmt.Sprintf("exit=%d", ee.ExitStatus())
	} else if err != nil {
		res = "error=" + err.Error()
	}
	log.Printf("exec pod=%s container=%s cmd=%q stdin=%v stdout=%v stderr=%v tty=%v client=%q %s (%s)",
		name, container, cmd, l.opts.Stdin, l.opts.Stdout, l.opts.Stderr, l.opts.TTY, l.who, res,
		time.Since(start).Round(time.Millisecond))
	return err
}

func handleExec(workDir string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		// /exec/{namespace}/{pod}/{container} or /exec/{namespace}/{pod}/{uid}/{container}
		parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/exec/"), "/")
		var ns, pod, uid, container string
		switch len(parts) {
		case 3:
			ns, pod, container = parts[0], parts[1], parts[2]
		case 4:
			ns, pod, uid, container = parts[0], parts[1], parts[2], parts[3]
		default:
			http.NotFound(w, req)
			return
		}
		who := "<none>"
		if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
			who = req.TLS.PeerCertificates[0].Subject.CommonName
		}
		opts, err := kubeletremotecommand.NewOptions(req)
		if err != nil {
			log.Printf("bad exec request %s from %q: %v", req.URL, who, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cmd := req.URL.Query()["command"]
		// Same timeouts as the kubelet defaults (--streaming-connection-idle-timeout=4h).
		kubeletremotecommand.ServeExec(w, req, loggingExecutor{hostExecutor{workDir}, who, opts},
			pod+"_"+ns, types.UID(uid), container, cmd, opts,
			4*time.Hour, remotecommandconsts.DefaultStreamCreationTimeout,
			remotecommandconsts.SupportedStreamingProtocols)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: pick a free port)")
	portFile := flag.String("port-file", "", "write the chosen port to this file once listening")
	certFile := flag.String("tls-cert-file", "", "serving certificate (PEM)")
	keyFile := flag.String("tls-private-key-file", "", "serving key (PEM)")
	clientCA := flag.String("client-ca-file", "", "require client certificates signed by this CA (PEM)")
	allowUnauth := flag.Bool("allow-unauthenticated", false, "accept connections without a client certificate")
	workDir := flag.String("work-dir", os.TempDir(), "working directory of executed commands")
	flag.Parse()
	log.SetPrefix("[fake-kubelet] ")

	if *certFile == "" || *keyFile == "" {
		log.Fatal("-tls-cert-file and -tls-private-key-file are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("loading serving certificate: %v", err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"}, // SPDY/WebSocket upgrades need HTTP/1.1
	}
	switch {
	case *clientCA != "":
		pem, err := ioutil.ReadFile(*clientCA)
		if err != nil {
			log.Fatalf("reading client CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("no certificates in %s", *clientCA)
		}
		tlsConfig.ClientCAs = pool
		tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
		if *allowUnauth {
			tlsConfig.ClientAuth = tls.VerifyClientCertIfGiven
		}
	case !*allowUnauth:
		log.Fatal("-client-ca-file is required (or pass -allow-unauthenticated)")
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/exec/", handleExec(*workDir))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := ioutil.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", port)), 0644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("listening on https://%s (client auth: %v)", ln.Addr(), tlsConfig.ClientAuth)
	srv := &http.Server{
		Handler:      mux,
		TLSConfig:    tlsConfig,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
		ErrorLog:     log.New(os.Stderr, "[fake-kubelet] http: ", log.LstdFlags),
	}
	log.Fatal(srv.Serve(tls.NewListener(ln, tlsConfig)))
}

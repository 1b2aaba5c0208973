package appliance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// The control channel is a local unix socket (mode 0600) speaking one JSON
// object per line each way. It is the daemon's only channel: coffred opens no
// inet socket, listening or outgoing. A request is {"op": "...", "args":
// {...}}; a response is {"ok": true, "result": ...} or {"ok": false,
// "error": "..."}. Peers are checked with SO_PEERCRED: only root or the
// daemon's own uid may talk to it.

// Request is one control request.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is one control response.
type Response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// HandlerFunc serves one op.
type HandlerFunc func(ctx context.Context, args json.RawMessage) (any, error)

// maxControlLine bounds one request line.
const maxControlLine = 64 << 10

// ControlServer serves the control socket.
type ControlServer struct {
	path     string
	ln       *net.UnixListener
	handlers map[string]HandlerFunc
	log      *slog.Logger
	wg       sync.WaitGroup
}

// ListenControl creates the socket at path with mode 0600 (a stale socket
// file from a crash is replaced; any other file there is an error).
func ListenControl(path string, handlers map[string]HandlerFunc, log *slog.Logger) (*ControlServer, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("appliance: control socket %s: a non-socket file is in the way", path)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("appliance: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("appliance: control socket: %w", err)
	}
	return &ControlServer{path: path, ln: ln, handlers: handlers, log: log}, nil
}

// Serve accepts connections until ctx is done.
func (s *ControlServer) Serve(ctx context.Context) {
	go func() { <-ctx.Done(); s.ln.Close() }()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
	s.wg.Wait()
	os.Remove(s.path)
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (s *ControlServer) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	uid, err := peerUID(c)
	if err != nil || (uid != 0 && uid != uint32(os.Getuid())) {
		s.log.Warn("control: refused a peer", "uid", uid, "err", err)
		json.NewEncoder(c).Encode(Response{Error: "appliance: control: permission denied"})
		return
	}
	r := bufio.NewReaderSize(c, 4096)
	enc := json.NewEncoder(c)
	for {
		line, err := readLine(r, maxControlLine)
		if err != nil {
			if !errors.Is(err, errEOF) {
				enc.Encode(Response{Error: err.Error()})
			}
			return
		}
		var req Request
		resp := Response{}
		if err := json.Unmarshal(line, &req); err != nil {
			resp.Error = "appliance: control: bad request: " + err.Error()
		} else if h, ok := s.handlers[req.Op]; !ok {
			resp.Error = fmt.Sprintf("appliance: control: unknown op %q", req.Op)
		} else if res, err := h(ctx, req.Args); err != nil {
			resp.Error = err.Error()
		} else {
			resp.OK = true
			resp.Result, _ = json.Marshal(res)
		}
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

var errEOF = errors.New("eof")

func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		part, isPrefix, err := r.ReadLine()
		if err != nil {
			if len(line) == 0 {
				return nil, errEOF
			}
			return nil, err
		}
		line = append(line, part...)
		if len(line) > max {
			return nil, fmt.Errorf("appliance: control: request over %d bytes", max)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// Call sends one request to the control socket at path and decodes the
// result into out (which may be nil).
func Call(path, op string, args any, out any) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("appliance: control socket %s: %w (is coffred running?)", path, err)
	}
	defer c.Close()
	req := Request{Op: op}
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return err
		}
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		return fmt.Errorf("appliance: control: %w", err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	if out != nil && resp.Result != nil {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"coffre/internal/testenv"
)

// The CLI tests drive the real binaries through scripts in
// testdata/scripts/*.txt, one subtest per script. A script is a list of
// lines, run in a fresh $WORK directory:
//
//	# comment
//	env NAME=VALUE          set a variable for later lines
//	exec PROG ARGS...       run; it must exit 0 (coffre and coffred are the binaries under test)
//	! exec PROG ARGS...     run; it must exit non-zero
//	code N                  the last exec exited with N
//	stdout REGEXP           the last exec's stdout matches (! stdout: does not)
//	stderr REGEXP           the same for stderr
//	exists PATH             the file exists (! exists: does not)
//	write PATH TEXT...      write TEXT (with \n escapes) to PATH
//	flip PATH OFFSET        flip the bits of one byte of PATH (damage a drive)
//
// Arguments are split on spaces; $WORK and $VAR are expanded; 'quoted text'
// is one argument.

var binDir string

func TestMain(m *testing.M) {
	dir, err := testenv.BuildCommands()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/scripts/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/scripts")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runScript(t, f)
		})
	}
}

type scriptState struct {
	t              *testing.T
	env            map[string]string
	stdout, stderr string
	code           int
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	s := &scriptState{t: t, env: map[string]string{"WORK": work}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := s.step(line); err != nil {
			t.Fatalf("%s:%d: %s\n%v\n--- stdout:\n%s\n--- stderr:\n%s", file, n, line, err, s.stdout, s.stderr)
		}
	}
}

func (s *scriptState) expand(w string) string {
	return os.Expand(w, func(k string) string {
		if v, ok := s.env[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
}

func (s *scriptState) fields(line string) []string {
	var out []string
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		if line == "" {
			break
		}
		if line[0] == '\'' {
			end := strings.IndexByte(line[1:], '\'')
			if end < 0 {
				end = len(line) - 1
			}
			out = append(out, s.expand(line[1:end+1]))
			line = line[min(len(line), end+2):]
			continue
		}
		end := strings.IndexByte(line, ' ')
		if end < 0 {
			end = len(line)
		}
		out = append(out, s.expand(line[:end]))
		line = line[end:]
	}
	return out
}

func (s *scriptState) step(line string) error {
	neg := false
	if strings.HasPrefix(line, "! ") {
		neg = true
		line = strings.TrimPrefix(line, "! ")
	}
	f := s.fields(line)
	switch f[0] {
	case "env":
		k, v, _ := strings.Cut(strings.SplitN(line, " ", 2)[1], "=")
		s.env[k] = s.expand(v)
		return nil
	case "exec":
		prog := f[1]
		if prog == "coffre" || prog == "coffred" {
			prog = filepath.Join(binDir, prog)
		}
		cmd := exec.Command(prog, f[2:]...)
		cmd.Dir = s.env["WORK"]
		cmd.Env = os.Environ()
		for k, v := range s.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		s.stdout, s.stderr = o.String(), e.String()
		s.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			s.code = ee.ExitCode()
		} else if err != nil {
			return err
		}
		if neg && s.code == 0 {
			return errors.New("succeeded, want failure")
		}
		if !neg && s.code != 0 {
			return errors.New("exit code " + strconv.Itoa(s.code) + ", want 0")
		}
		return nil
	case "code":
		want, _ := strconv.Atoi(f[1])
		if s.code != want {
			return errors.New("exit code " + strconv.Itoa(s.code) + ", want " + f[1])
		}
		return nil
	case "stdout", "stderr":
		text := s.stdout
		if f[0] == "stderr" {
			text = s.stderr
		}
		re, err := regexp.Compile("(?m)" + strings.Join(f[1:], " "))
		if err != nil {
			return err
		}
		if re.MatchString(text) == neg {
			return errors.New(f[0] + " match is " + strconv.FormatBool(!neg) + "-expected for " + re.String())
		}
		return nil
	case "exists":
		_, err := os.Stat(f[1])
		if (err == nil) == neg {
			return errors.New("exists = " + strconv.FormatBool(err == nil))
		}
		return nil
	case "flip":
		off, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return err
		}
		fh, err := os.OpenFile(f[1], os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer fh.Close()
		b := make([]byte, 1)
		if _, err := fh.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		_, err = fh.WriteAt(b, off)
		return err
	case "write":
		text := strings.ReplaceAll(strings.Join(f[2:], " "), `\n`, "\n")
		return os.WriteFile(f[1], []byte(text), 0o644)
	}
	return errors.New("unknown script command " + f[0])
}

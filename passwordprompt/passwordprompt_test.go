package passwordprompt

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pipeWith returns the read end of a pipe that holds input and is then
// closed, as a script's standard input would be.
func pipeWith(t *testing.T, input string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := io.WriteString(w, input); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r
}

func TestReadFromAPipe(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"s3cret\n", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret", "s3cret"},
		{" spaces kept \n", " spaces kept "},
		{"pässwörd 🔑\n", "pässwörd 🔑"},
	} {
		var out strings.Builder
		got, err := Read(pipeWith(t, tc.input), &out, "Password: ")
		if err != nil || got != tc.want {
			t.Errorf("Read(%q) = %q, %v; want %q", tc.input, got, err, tc.want)
		}
		if out.String() != "Password: " {
			t.Errorf("Read(%q) wrote %q, want the prompt", tc.input, out.String())
		}
	}
}

func TestReadTakesOnlyItsLine(t *testing.T) {
	in := pipeWith(t, "s3cret\n/join lab\n")
	if got, err := Read(in, io.Discard, ""); err != nil || got != "s3cret" {
		t.Fatalf("Read = %q, %v", got, err)
	}
	rest, err := bufio.NewReader(in).ReadString('\n')
	if err != nil || rest != "/join lab\n" {
		t.Fatalf("after the password, the input holds %q, %v; want the next line", rest, err)
	}
}

func TestReadRefusesEmptyInput(t *testing.T) {
	if _, err := Read(pipeWith(t, "\n"), io.Discard, ""); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty line: %v, want ErrEmpty", err)
	}
	if _, err := Read(pipeWith(t, ""), io.Discard, ""); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("no input: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		path := filepath.Join(dir, "pw")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct{ content, want string }{
		{"s3cret\n", "s3cret"},
		{"s3cret", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret\nsecond line\n", "s3cret"},
		{" a b \n", " a b "},
	} {
		if got, err := FromFile(write(tc.content)); err != nil || got != tc.want {
			t.Errorf("FromFile(%q) = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	for _, content := range []string{"", "\n", "\r\n", "\nsecond line\n"} {
		if got, err := FromFile(write(content)); !errors.Is(err, ErrEmpty) {
			t.Errorf("FromFile(%q) = %q, %v; want ErrEmpty", content, got, err)
		}
	}
	if _, err := FromFile(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Errorf("missing file: %v", err)
	}
}

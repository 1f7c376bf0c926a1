// Package passwordprompt gets a password from the person at the keyboard
// without showing it, or from a file for scripts and tests.
package passwordprompt

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// ErrEmpty is the error for an empty password, which is never accepted.
var ErrEmpty = errors.New("the password is empty")

// Read writes prompt to out and reads one line from in as the password.
// When in is a terminal, what is typed is not echoed. Otherwise (a pipe, a
// file) the line is read as it is, one byte at a time, so that nothing
// after it is taken from in. The line break is not part of the password.
func Read(in *os.File, out io.Writer, prompt string) (string, error) {
	if _, err := io.WriteString(out, prompt); err != nil {
		return "", err
	}
	var password string
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		b, err := term.ReadPassword(fd)
		// The Enter that ended the password was not echoed either: end the
		// prompt's line for the user.
		fmt.Fprintln(out)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		password = string(b)
	} else {
		line, err := readLine(in)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		password = line
	}
	if password == "" {
		return "", ErrEmpty
	}
	return password, nil
}

// readLine reads up to the next "\n" (or the end of the input) and returns
// the line without its "\n" or "\r\n". Input that ends before any byte is
// io.ErrUnexpectedEOF.
func readLine(r io.Reader) (string, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		if err == io.EOF {
			if len(line) == 0 {
				return "", io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(string(line), "\r"), nil
}

// FromFile reads a password from the first line of the file at path,
// without its line break. An empty first line is refused (ErrEmpty).
func FromFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the password file: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if password := strings.TrimSuffix(first, "\r"); password != "" {
		return password, nil
	}
	return "", fmt.Errorf("password file %s: %w", path, ErrEmpty)
}

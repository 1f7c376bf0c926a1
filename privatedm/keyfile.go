package privatedm

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"golang.org/x/crypto/curve25519"
)

// ConfigDirEnv names the environment variable that, when set, is the
// client's configuration directory; the key files go in its "keys"
// subdirectory.
const ConfigDirEnv = "CHAT_CONFIG_DIR"

// DefaultDir is the directory where the key files live by default:
// $CHAT_CONFIG_DIR/keys when that variable is set, otherwise
// os.UserConfigDir()/chat/keys (~/.config/chat/keys on Linux).
func DefaultDir() (string, error) {
	if dir := os.Getenv(ConfigDirEnv); dir != "" {
		return filepath.Join(dir, "keys"), nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the configuration directory (set %s): %w", ConfigDirEnv, err)
	}
	return filepath.Join(base, "chat", "keys"), nil
}

// KeyFile is the path of user's key file in dir: dir/<user>.key. It
// refuses a user name that is not a plain file name (see checkUser).
func KeyFile(dir, user string) (string, error) {
	if err := checkUser(user); err != nil {
		return "", err
	}
	return filepath.Join(dir, user+".key"), nil
}

// checkUser accepts a user name that can be used as it is in a file name
// inside the key directory: not empty, not starting with "." (which also
// rules out "." and ".."), and without path separators, whitespace or
// control characters.
func checkUser(user string) error {
	switch {
	case user == "":
		return errors.New("user name is empty")
	case strings.HasPrefix(user, "."):
		return fmt.Errorf("user name %q starts with a dot; it cannot name a key file", user)
	case strings.ContainsAny(user, `/\`):
		return fmt.Errorf("user name %q contains a path separator; it cannot name a key file", user)
	case strings.IndexFunc(user, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) >= 0:
		return fmt.Errorf("user name %q contains whitespace or a control character", user)
	}
	return nil
}

// keyFileContent is what a key file holds, as JSON. The public key is
// stored too, although it follows from the private one, so that a damaged
// file is noticed instead of silently giving another key.
type keyFileContent struct {
	User    string `json:"user"`
	Public  string `json:"public"`
	Private string `json:"private"`
}

// LoadOrCreate returns user's key pair from dir/<user>.key, creating the
// directory (0700) and the file (0600) with a new key pair when the file
// does not exist yet; created tells which happened. A file that cannot be
// read as a key pair is an error and is left as it is: deleting it loses
// the key, and the messages sealed to it.
func LoadOrCreate(dir, user string) (kp KeyPair, created bool, err error) {
	path, err := KeyFile(dir, user)
	if err != nil {
		return KeyPair{}, false, err
	}
	kp, err = load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return kp, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyPair{}, false, fmt.Errorf("create the key directory: %w", err)
	}
	if kp, err = Generate(); err != nil {
		return KeyPair{}, false, err
	}
	switch err := create(path, user, kp); {
	case errors.Is(err, fs.ErrExist):
		// Another process (a second client of the same user) created the
		// file first: its key is the one to use.
		kp, err = load(path)
		return kp, false, err
	case err != nil:
		return KeyPair{}, false, err
	}
	return kp, true, nil
}

// load reads a key file. A missing file gives an error that wraps
// fs.ErrNotExist.
func load(path string) (KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, err
	}
	corrupt := func(why string) (KeyPair, error) {
		return KeyPair{}, fmt.Errorf("key file %s is damaged (%s); it was left as it is: "+
			"restore it from a backup, or move it away to get a new key", path, why)
	}
	var content keyFileContent
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&content); err != nil {
		return corrupt("not a key file: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return corrupt("unexpected data after the key pair")
	}
	var kp KeyPair
	if !decode32(content.Private, &kp.Private) {
		return corrupt("the private key is not base64 of 32 bytes")
	}
	if !decode32(content.Public, &kp.Public) {
		return corrupt("the public key is not base64 of 32 bytes")
	}
	derived, err := curve25519.X25519(kp.Private[:], curve25519.Basepoint)
	if err != nil || subtle.ConstantTimeCompare(derived, kp.Public[:]) != 1 {
		return corrupt("the public key does not belong to the private key")
	}
	return kp, nil
}

// decode32 decodes standard base64 of exactly 32 bytes into dst.
func decode32(s string, dst *[32]byte) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return false
	}
	copy(dst[:], b)
	return true
}

// create writes a new key file, never replacing an existing one. The key
// is written and synced to a temporary file first, then linked to its
// name, so that the file is either complete or absent, and a file that
// appeared meanwhile gives an error wrapping fs.ErrExist.
func create(path, user string, kp KeyPair) error {
	data, err := json.MarshalIndent(keyFileContent{
		User:    user,
		Public:  base64.StdEncoding.EncodeToString(kp.Public[:]),
		Private: base64.StdEncoding.EncodeToString(kp.Private[:]),
	}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".new-key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create the key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write the key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write the key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write the key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create the key file: %w", err)
	}
	return nil
}

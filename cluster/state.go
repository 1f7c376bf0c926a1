package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"chat/replication"
)

// state is what a server keeps of the cluster across restarts, in
// <data>/<name>.cluster.json: its rank (so it can elect while the
// reference is down), the replication promise (which must never go back)
// and the last peer list.
type state struct {
	Rank    int                 `json:"rank"`
	Promise replication.Promise `json:"promise"`
	Peers   []peerInfo          `json:"peers"`
}

// peerInfo is one server as the reference lists it.
type peerInfo struct {
	Name string `json:"name"`
	Rank int    `json:"rank"`
	Addr string `json:"addr"`
}

func statePath(dir, name string) string { return filepath.Join(dir, name+".cluster.json") }

// loadState reads the state file; a missing file is the empty state.
func loadState(path string) (state, error) {
	var st state
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("cluster: %s is damaged: %w", path, err)
	}
	return st, nil
}

// saveState writes the state file durably: a temporary file, fsynced,
// renamed over the old one, and the directory fsynced.
func saveState(path string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

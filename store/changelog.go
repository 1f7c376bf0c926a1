package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"
)

// The change log is where a change becomes durable. It is a directory of
// segment files, each named after the log sequence number (LSN) of its
// first entry. An entry is framed as
//
//	[4-byte length][4-byte CRC-32C of the payload][payload: MessagePack]
//
// so that a write torn by a crash is recognised when the log is read back:
// reading stops at the first frame that is cut short, fails its checksum or
// has length zero. Segment files are created at their full size and filled
// with zeros before use, so that appending never changes a file's size or
// allocation and fdatasync has only data to flush (measured here: a third
// cheaper than fsync of a growing file). Entries are indexed into SQLite
// soon after they are durable; segments whose entries are all indexed are
// deleted.

// maxEntrySize bounds one entry; a larger length in a frame is corruption.
const maxEntrySize = 16 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// entry kinds.
const (
	entryLogin   = "login"
	entryChannel = "channel"
	entryPost    = "post"
	entryDirect  = "direct"
	entryKey     = "key"  // only a request key and its reply: the change failed a check
	entryNoop    = "noop" // nothing: the first entry of a new coordinator's epoch (replication)
)

// entry is one change as written to the log.
type entry struct {
	LSN    uint64 `msgpack:"lsn"`
	Kind   string `msgpack:"kind"`
	ID     int64  `msgpack:"id,omitempty"`      // message id
	User   string `msgpack:"user,omitempty"`    // login's user; channel's creator; message's author
	Name   string `msgpack:"name,omitempty"`    // channel name (channel, post)
	To     string `msgpack:"to,omitempty"`      // direct message recipient
	Text   string `msgpack:"text,omitempty"`    // message text
	TS     int64  `msgpack:"ts"`                // Unix milliseconds
	Clock  uint64 `msgpack:"clock,omitempty"`   // Lamport clock of a message
	Key    string `msgpack:"key,omitempty"`     // request key
	Reply  []byte `msgpack:"reply,omitempty"`   // reply stored under Key
	KeyTS  int64  `msgpack:"key_ts,omitempty"`  // when Key was applied, Unix milliseconds
	HasKey bool   `msgpack:"has_key,omitempty"` // Key is set (Reply may be empty)
	Epoch  uint64 `msgpack:"epoch,omitempty"`   // replication epoch of the coordinator that ordered it

	raw []byte // the encoded payload, as framed in the log and sent to replicas
}

// appendFrame appends e, framed, to buf.
func appendFrame(buf []byte, e *entry) ([]byte, error) {
	payload, err := msgpack.Marshal(e)
	if err != nil {
		return buf, err
	}
	e.raw = payload
	return appendRawFrame(buf, payload), nil
}

// appendRawFrame appends an already encoded payload, framed, to buf.
func appendRawFrame(buf, payload []byte) []byte {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(hdr[4:8], crc32.Checksum(payload, crcTable))
	return append(append(buf, hdr[:]...), payload...)
}

// errTorn marks the end of the readable log: a frame cut short or damaged.
var errTorn = errors.New("torn entry")

// readFrame reads one entry; it returns io.EOF at a clean end and errTorn
// for a frame cut short or failing its checksum.
func readFrame(r *bufio.Reader) (*entry, int, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, 0, io.EOF
		}
		return nil, 0, errTorn
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n == 0 {
		return nil, 0, io.EOF // the zeros after the last entry
	}
	if n > maxEntrySize {
		return nil, 0, errTorn
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, 0, errTorn
	}
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:8]) {
		return nil, 0, errTorn
	}
	var e entry
	if err := msgpack.Unmarshal(payload, &e); err != nil {
		return nil, 0, errTorn
	}
	e.raw = payload
	return &e, 8 + int(n), nil
}

// segmentName is the file name of the segment whose first entry is lsn.
func segmentName(lsn uint64) string { return fmt.Sprintf("%020d.log", lsn) }

// segments lists the first LSNs of the segments in dir, in order.
func segments(dir string) ([]uint64, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), ".log")
		if !ok {
			continue
		}
		lsn, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		firsts = append(firsts, lsn)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// readSegment calls fn for every entry of the segment file, up to its
// end: the zeros after the last entry, or a torn entry (a crash in the
// middle of a write). Acknowledged entries all come before a torn one.
func readSegment(path string, fn func(*entry) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		e, _, err := readFrame(r)
		if err == io.EOF || errors.Is(err, errTorn) {
			return nil
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// zeros is what new segments are filled with.
var zeros = make([]byte, 1<<20)

// createSegment creates a segment file of size bytes of zeros, durable with
// its directory entry.
func createSegment(dir string, first uint64, size int64) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, segmentName(first)), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	for written := int64(0); written < size && err == nil; written += int64(len(zeros)) {
		_, err = f.Write(zeros[:min(int64(len(zeros)), size-written)])
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// syncDir fsyncs a directory, so that files created or removed in it
// survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// syncData flushes a segment's data to disk. Its size and blocks never
// change after createSegment, so fdatasync is enough.
func syncData(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}

package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
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
// has length zero, and damage in the middle of the log is told from a torn
// write (see replayLog). Segment files are created at their full size and filled
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
	entryLogout  = "logout" // a token revoked (accounts.go)
	entryKey     = "key"    // only a request key and its reply: the change failed a check
	entryNoop    = "noop"   // nothing: the first entry of a new coordinator's epoch (replication)
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

	// Accounts (accounts.go), on login and logout entries. An entry never
	// has more than 15 non-empty fields (a claim has 10, 14 with a request
	// key): it stays a MessagePack fixmap, which findFrame looks for.
	Claim   bool   `msgpack:"claim,omitempty"`      // the login claims User
	Hash    string `msgpack:"pw_hash,omitempty"`    // the claim's password hash
	PubKey  string `msgpack:"public_key,omitempty"` // public key stored on the account
	PrevKey string `msgpack:"prev_key,omitempty"`   // the key PubKey replaced (to undo it)
	Token   string `msgpack:"token,omitempty"`      // TokenHash of the token issued (login) or revoked (logout)
	Expires int64  `msgpack:"expires,omitempty"`    // the token's expiry, Unix milliseconds

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

// decodeFrame decodes the frame at data[off:]. It returns the entry and
// the frame's size when the frame is sound, and nil otherwise: end is
// true when nothing more is framed there (a length of zero, as in the
// zeros after the last entry, or fewer bytes left than a header), false
// when a frame is there but cut short, over maxEntrySize, failing its
// checksum or undecodable.
func decodeFrame(data []byte, off int) (e *entry, size int, end bool) {
	if off+8 > len(data) {
		return nil, 0, true
	}
	n := int(binary.BigEndian.Uint32(data[off:]))
	switch {
	case n == 0:
		return nil, 0, true
	case n > maxEntrySize || n > len(data)-off-8:
		return nil, 0, false
	}
	payload := data[off+8 : off+8+n]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(data[off+4:]) {
		return nil, 0, false
	}
	e = new(entry)
	if err := msgpack.Unmarshal(payload, e); err != nil {
		return nil, 0, false
	}
	e.raw = payload
	return e, 8 + n, false
}

// entrySignature is how every encoded entry starts after its map header
// (0x80 | number of fields): the key of its first field, "lsn" (a
// MessagePack string of 3 bytes). The log reader looks for it to find the
// sound frames that follow a damaged one.
var entrySignature = []byte{0xa3, 'l', 's', 'n'}

// findFrame returns the offset of the first sound frame of data that
// starts after from and holds an entry with an LSN of at least min, and
// that entry; -1 and nil when there is none.
func findFrame(data []byte, from int, min uint64) (int, *entry) {
	for i := max(0, from+1+9); i+len(entrySignature) <= len(data); {
		j := bytes.Index(data[i:], entrySignature)
		if j < 0 {
			return -1, nil
		}
		sig := i + j
		if data[sig-1]&0xf0 == 0x80 { // a fixmap header: a frame would start 8 bytes before it
			if e, _, _ := decodeFrame(data, sig-9); e != nil && e.LSN >= min {
				return sig - 9, e
			}
		}
		i = sig + 1
	}
	return -1, nil
}

// Reading the log back. The log is read in order from its first segment;
// every entry must have the LSN after the previous one. Reading stops at
// the first frame that is not the next entry: after a crash that is the
// end of what was written, where the last write may have been torn (cut
// short or garbled: it was never acknowledged, since a batch is
// acknowledged only once fsynced). To tell that from damage, the rest of
// the log is searched for a sound frame: there is none after a torn write
// (the writes are sequential and the segments filled with zeros), so one
// means that entries were lost from the middle of the log. That is
// reported as a CorruptError, unless SQLite already holds every entry
// that is missing (applied): then reading goes on from the sound frame.
// A segment that ends (zeros) and the next segment that starts with the
// next entry is the ordinary boundary left by a rotation. A first segment
// that starts after the entry following SQLite's last means that entries
// are in neither: SQLite lost its WAL after the log segments were deleted.
//
// What cannot be told apart: damage to the very last entries, with no
// sound frame after them, looks like a torn write and is accepted (at
// most the last batch: everything before it is followed by it). And a
// power loss with several batches not yet fsynced may leave a sound frame
// after a torn one: that is reported as damage though none of those
// entries was acknowledged; the way out (dropping everything from the
// torn entry on) is then exactly what a torn tail gets anyway.

// logReader reads segment files, one kept in memory at a time.
type logReader struct {
	dir    string
	firsts []uint64
	cached int // index in firsts of data, -1 for none
	data   []byte
}

// segment returns the contents of segment i.
func (r *logReader) segment(i int) ([]byte, error) {
	if i != r.cached {
		data, err := os.ReadFile(filepath.Join(r.dir, segmentName(r.firsts[i])))
		if err != nil {
			return nil, err
		}
		r.cached, r.data = i, data
	}
	return r.data, nil
}

// find returns the position of the first sound frame after offset off of
// segment seg (off -1: from its start) holding an LSN of at least min,
// looking in the later segments too; e is nil when there is none.
func (r *logReader) find(seg, off int, min uint64) (int, int, *entry, error) {
	for ; seg < len(r.firsts); seg, off = seg+1, -1 {
		data, err := r.segment(seg)
		if err != nil {
			return 0, 0, nil, err
		}
		if off < 0 {
			if e, _, _ := decodeFrame(data, 0); e != nil && e.LSN >= min {
				return seg, 0, e, nil
			}
			off = 0
		}
		if at, e := findFrame(data, off, min); e != nil {
			return seg, at, e, nil
		}
	}
	return 0, 0, nil, nil
}

// lastSound returns the largest LSN of the sound frames from the one at
// (seg, off), holding e, to the end of the log.
func (r *logReader) lastSound(seg, off int, e *entry) uint64 {
	last := e.LSN
	for {
		var err error
		if seg, off, e, err = r.find(seg, off, last+1); err != nil || e == nil {
			return last
		}
		last = e.LSN
	}
}

// last returns the largest LSN of the sound frames of the log (0 for none).
func (r *logReader) last() uint64 {
	seg, off, e, err := r.find(0, -1, 0)
	if err != nil || e == nil {
		return 0
	}
	return r.lastSound(seg, off, e)
}

// name is the path of segment i as shown in errors.
func (r *logReader) name(i int) string { return filepath.Join(r.dir, segmentName(r.firsts[i])) }

// replayLog reads the log of dir (the segments firsts, in order) and calls
// fn with every entry after applied (the last entry SQLite holds), in
// order, up to the end of the log, or up to dropFrom excluded when it is
// not 0 (entries from dropFrom on are ignored, damaged or not). It returns
// the LSN of the last entry of the log (applied when there is none after
// it; never less than applied), or a *CorruptError when entries SQLite
// lacks are lost from the log.
func replayLog(dir string, firsts []uint64, applied, dropFrom uint64, fn func(*entry) error) (uint64, error) {
	if dropFrom == 0 {
		dropFrom = math.MaxUint64
	}
	if len(firsts) == 0 || dropFrom <= applied+1 {
		return applied, nil
	}
	r := &logReader{dir: dir, firsts: firsts, cached: -1}
	next := firsts[0] // the LSN the next entry must have
	if next > applied+1 {
		return 0, &CorruptError{File: r.name(0), Offset: -1, LSN: applied + 1, Seen: max(next-1, r.last()),
			Reason: fmt.Sprintf("SQLite holds the entries up to %d, and the log starts at %d: entries %d to %d are in neither (was SQLite's WAL lost?)", applied, next, applied+1, next-1)}
	}
	seg, off := 0, 0
	for next < dropFrom {
		data, err := r.segment(seg)
		if err != nil {
			return 0, err
		}
		e, size, end := decodeFrame(data, off)
		if e != nil && e.LSN == next {
			if e.LSN > applied {
				if err := fn(e); err != nil {
					return 0, err
				}
			}
			next++
			off += size
			continue
		}
		// Not the next entry: where does the log go on?
		fseg, foff, found := seg, off, e // a sound frame, but out of order
		if e == nil {
			if fseg, foff, found, err = r.find(seg, off, next); err != nil {
				return 0, err
			}
		}
		switch {
		case found == nil: // the end of the log (after a torn write, maybe)
			return max(next-1, applied), nil
		case fseg > seg && foff == 0 && found.LSN == next:
			// This segment ends, and the next one goes on: a rotation.
		case found.LSN == next:
			// Something that is no entry, then the next entry: nothing
			// is missing.
		case found.LSN < next:
			return 0, &CorruptError{File: r.name(fseg), Offset: int64(foff), LSN: max(next, applied+1), Seen: r.lastSound(fseg, foff, found),
				Reason: fmt.Sprintf("entry %d found where entry %d comes next", found.LSN, next)}
		case found.LSN-1 <= applied:
			// Entries are missing from the log, but SQLite holds them.
		default:
			var what string
			switch {
			case e != nil:
				what = fmt.Sprintf("entry %d where entry %d comes next", e.LSN, next)
			case end && fseg == seg:
				what = "zeros where entries go on"
			case end:
				what = fmt.Sprintf("the segment ends after entry %d, and %s starts with entry %d", next-1, r.name(fseg), found.LSN)
			default:
				what = fmt.Sprintf("entry %d is damaged (cut short, failing its checksum or unreadable)", next)
			}
			lost, seen := max(next, applied+1), r.lastSound(fseg, foff, found)
			missing := fmt.Sprintf("entries %d to %d are", lost, found.LSN-1)
			if lost == found.LSN-1 {
				missing = fmt.Sprintf("entry %d is", lost)
			}
			return 0, &CorruptError{File: r.name(seg), Offset: int64(off), LSN: lost, Seen: seen,
				Reason: fmt.Sprintf("%s, and sound entries follow (%d to %d): %s lost", what, found.LSN, seen, missing)}
		}
		seg, off, next = fseg, foff, found.LSN
	}
	return max(next-1, applied), nil
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

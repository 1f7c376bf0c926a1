package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxDepth bounds how deeply maps and arrays may nest in one frame.
const maxDepth = 32

// wellFormed walks a MessagePack value without allocating and checks that
// every declared length fits in the bytes that are really there, that
// nesting stays under maxDepth and that nothing trails the value. The
// MessagePack library pre-allocates what a header declares, so a 5-byte
// frame announcing 4 billion entries would otherwise exhaust memory.
func wellFormed(b []byte) error {
	rest, err := skipValue(b, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the end of the value", len(rest))
	}
	return nil
}

// WellFormed is the check to run before the MessagePack library decodes b
// (see wellFormed): a value whose declared lengths do not fit in b, nests
// deeper than 32 or has bytes after it is refused.
func WellFormed(b []byte) error { return wellFormed(b) }

// SkipValue returns what follows the first MessagePack value of b,
// without decoding it; a value cut short, nesting deeper than 32 or
// holding the unused code 0xc1 is an error.
func SkipValue(b []byte) ([]byte, error) { return skipValue(b, 0) }

var errTruncated = errors.New("value is truncated")

// skipValue returns what follows the first value of b.
func skipValue(b []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	if len(b) == 0 {
		return nil, errTruncated
	}
	c, b := b[0], b[1:]
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
		return b, nil
	case c >= 0x80 && c <= 0x8f:
		return skipItems(b, 2*int(c&0x0f), depth)
	case c >= 0x90 && c <= 0x9f:
		return skipItems(b, int(c&0x0f), depth)
	case c >= 0xa0 && c <= 0xbf:
		return skipBytes(b, int(c&0x1f))
	}
	switch c {
	case 0xcc, 0xd0:
		return skipBytes(b, 1)
	case 0xcd, 0xd1:
		return skipBytes(b, 2)
	case 0xca, 0xce, 0xd2:
		return skipBytes(b, 4)
	case 0xcb, 0xcf, 0xd3:
		return skipBytes(b, 8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 (+1 type byte)
		return skipBytes(b, 1+1<<(c-0xd4))
	case 0xc4, 0xd9: // bin8, str8
		return skipSized(b, 1, 0)
	case 0xc5, 0xda:
		return skipSized(b, 2, 0)
	case 0xc6, 0xdb:
		return skipSized(b, 4, 0)
	case 0xc7: // ext8, ext16, ext32: length, then a type byte
		return skipSized(b, 1, 1)
	case 0xc8:
		return skipSized(b, 2, 1)
	case 0xc9:
		return skipSized(b, 4, 1)
	case 0xdc, 0xdd: // array16, array32
		n, rest, err := readLen(b, 2<<(c-0xdc)) // 2 or 4 bytes
		if err != nil {
			return nil, err
		}
		return skipItems(rest, n, depth)
	case 0xde, 0xdf: // map16, map32
		n, rest, err := readLen(b, 2<<(c-0xde))
		if err != nil {
			return nil, err
		}
		return skipItems(rest, 2*n, depth)
	}
	return nil, fmt.Errorf("byte 0x%02x is not a MessagePack type", c)
}

func readLen(b []byte, size int) (int, []byte, error) {
	if len(b) < size {
		return 0, nil, errTruncated
	}
	var n uint64
	switch size {
	case 1:
		n = uint64(b[0])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b))
	case 4:
		n = uint64(binary.BigEndian.Uint32(b))
	}
	return int(n), b[size:], nil
}

func skipSized(b []byte, lenSize, extra int) ([]byte, error) {
	n, rest, err := readLen(b, lenSize)
	if err != nil {
		return nil, err
	}
	return skipBytes(rest, n+extra)
}

func skipBytes(b []byte, n int) ([]byte, error) {
	if n > len(b) {
		return nil, errTruncated
	}
	return b[n:], nil
}

func skipItems(b []byte, n, depth int) ([]byte, error) {
	if n > len(b) { // every item takes at least one byte
		return nil, errTruncated
	}
	var err error
	for range n {
		if b, err = skipValue(b, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}

package cluster

import "chat/proto"

// A reader of MessagePack in place, for readMsg. msgpack.Decoder copies
// every byte it skips through its reader, and reading a frame's envelope
// and the top level of its data is nearly all skipping (an Append's
// entries); these functions only move an index over the frame.
//
// scanEnvelope and scanHead read a map as msgpack decodes one into a
// struct: keys may be strings, byte strings or nil, the values of other
// keys are skipped, the last of two equal keys wins, and (scanHead) a key
// or field of the wrong type ends the reading. A frame scanEnvelope
// cannot read goes to msgpack, which decides what it means and says what
// is wrong with it; TestDecodeMatchesReference and FuzzDecodeMsg hold the
// two to the same answers, except for a frame that is not well formed
// (proto.WellFormed: a length beyond its end, deep nesting, trailing
// bytes), refused before msgpack sees it, since msgpack allocates
// whatever a header declares.

// skipValue returns where the MessagePack value at b[i] ends (proto's
// SkipValue); ok is false when b ends first, the value nests deeper than
// 32 or holds 0xc1, the code MessagePack leaves unused.
func skipValue(b []byte, i int) (next int, ok bool) {
	rest, err := proto.SkipValue(b[i:])
	return len(b) - len(rest), err == nil
}

// bigEndian reads the size-byte unsigned number at b[i].
func bigEndian(b []byte, i, size int) (n uint64, next int, ok bool) {
	if size > len(b)-i {
		return 0, i, false
	}
	for _, c := range b[i : i+size] {
		n = n<<8 | uint64(c)
	}
	return n, i + size, true
}

// mapLen reads the header of the map at b[i]: its number of entries.
// Anything but a map (nil included) is not ok.
func mapLen(b []byte, i int) (n, next int, ok bool) {
	if i >= len(b) {
		return 0, i, false
	}
	var size int
	switch c := b[i]; {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), i + 1, true
	case c == 0xde:
		size = 2
	case c == 0xdf:
		size = 4
	default:
		return 0, i, false
	}
	l, next, ok := bigEndian(b, i+1, size)
	return int(l), next, ok
}

// bytesAt reads the string at b[i] as msgpack decodes one into a Go
// string: a string, a byte string, or nil (empty).
func bytesAt(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) {
		return nil, i, false
	}
	c := b[i]
	var n uint64
	switch {
	case c == 0xc0:
		return nil, i + 1, true
	case c >= 0xa0 && c <= 0xbf:
		n, i, ok = uint64(c&0x1f), i+1, true
	case c == 0xc4 || c == 0xd9:
		n, i, ok = bigEndian(b, i+1, 1)
	case c == 0xc5 || c == 0xda:
		n, i, ok = bigEndian(b, i+1, 2)
	case c == 0xc6 || c == 0xdb:
		n, i, ok = bigEndian(b, i+1, 4)
	default:
		return nil, i, false
	}
	if !ok || n > uint64(len(b)-i) {
		return nil, i, false
	}
	return b[i : i+int(n)], i + int(n), true
}

// uintAt reads the integer at b[i] as msgpack decodes one into a uint64:
// nil is 0, and a negative number wraps around.
func uintAt(b []byte, i int) (n uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, i, false
	}
	c := b[i]
	switch {
	case c == 0xc0:
		return 0, i + 1, true
	case c <= 0x7f || c >= 0xe0: // fixint
		return uint64(int8(c)), i + 1, true
	case c >= 0xcc && c <= 0xcf: // uint8..uint64
		return bigEndian(b, i+1, 1<<(c-0xcc))
	case c >= 0xd0 && c <= 0xd3: // int8..int64: sign-extended
		size := 1 << (c - 0xd0)
		n, next, ok = bigEndian(b, i+1, size)
		if shift := 64 - 8*size; ok && shift > 0 {
			n = uint64(int64(n<<shift) >> shift)
		}
		return n, next, ok
	}
	return 0, i, false
}

// dataHead is what readMsg itself reads of a message's data (slices of it).
type dataHead struct {
	clock               uint64
	status, description []byte
}

// scanHead reads the clock, status and description of data, a map that
// skipValue has read through. Like msgpack decoding data into a struct
// of those three fields, it stops at the first key or field of the wrong
// type and keeps what it read before.
func scanHead(data []byte) (h dataHead) {
	n, i, _ := mapLen(data, 0)
	for range n {
		key, j, ok := bytesAt(data, i)
		if !ok {
			return h
		}
		switch string(key) {
		case "clock":
			var clock uint64
			if clock, i, ok = uintAt(data, j); ok {
				h.clock = clock
			}
		case "status":
			var s []byte
			if s, i, ok = bytesAt(data, j); ok {
				h.status = s
			}
		case "description":
			var s []byte
			if s, i, ok = bytesAt(data, j); ok {
				h.description = s
			}
		default:
			i, ok = skipValue(data, j)
		}
		if !ok {
			return h
		}
	}
	return h
}

// scanEnvelope finds the service and the data of a frame in the form
// every server sends: a map whose data is a map. ok is false for any
// other form, well-formed or not.
func scanEnvelope(frame []byte) (service, data []byte, ok bool) {
	n, i, ok := mapLen(frame, 0)
	if !ok {
		return nil, nil, false
	}
	for range n {
		key, j, ok := bytesAt(frame, i)
		if !ok {
			return nil, nil, false
		}
		switch string(key) {
		case "service":
			service, i, ok = bytesAt(frame, j)
		case "data":
			if _, _, ok = mapLen(frame, j); ok {
				if i, ok = skipValue(frame, j); ok {
					data = frame[j:i]
				}
			}
		default:
			i, ok = skipValue(frame, j)
		}
		if !ok {
			return nil, nil, false
		}
	}
	return service, data, data != nil
}

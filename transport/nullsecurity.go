package transport

import (
	"fmt"
	"io"

	"github.com/go-zeromq/zmq4"
)

// NullMechanism is what zmq4's NULL security mechanism does besides its
// handshake: nothing (no encryption). A zmq4.Security that watches its
// socket's connections embeds it and writes only Handshake, which is the
// one place zmq4 hands it each connection (see NullHandshake).
type NullMechanism struct{}

// Type is zmq4.NullSecurity: the same bytes on the wire as zmq4's own.
func (NullMechanism) Type() zmq4.SecurityType { return zmq4.NullSecurity }

// Encrypt copies data as it is.
func (NullMechanism) Encrypt(w io.Writer, data []byte) (int, error) { return w.Write(data) }

// Decrypt copies data as it is.
func (NullMechanism) Decrypt(w io.Writer, data []byte) (int, error) { return w.Write(data) }

// NullHandshake is zmq4's NULL security handshake: our READY, then the
// peer's into conn.Peer.Meta.
func NullHandshake(conn *zmq4.Conn) error {
	if err := SendReady(conn, conn.Meta); err != nil {
		return err
	}
	return RecvReady(conn)
}

// SendReady sends the NULL handshake's READY command with meta.
func SendReady(conn *zmq4.Conn, meta zmq4.Metadata) error {
	raw, err := meta.MarshalZMTP()
	if err != nil {
		return fmt.Errorf("zmq4: could not marshal metadata: %w", err)
	}
	if err := conn.SendCmd(zmq4.CmdReady, raw); err != nil {
		return fmt.Errorf("zmq4: could not send metadata to peer: %w", err)
	}
	return nil
}

// RecvReady reads the peer's READY command into conn.Peer.Meta.
func RecvReady(conn *zmq4.Conn) error {
	cmd, err := conn.RecvCmd()
	if err != nil {
		return fmt.Errorf("zmq4: could not recv metadata from peer: %w", err)
	}
	if cmd.Name != zmq4.CmdReady {
		return zmq4.ErrBadCmd
	}
	if err := conn.Peer.Meta.UnmarshalZMTP(cmd.Body); err != nil {
		return fmt.Errorf("zmq4: could not unmarshal peer metadata: %w", err)
	}
	return nil
}

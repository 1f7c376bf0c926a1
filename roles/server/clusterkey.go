package server

import (
	"context"

	"chat/cluster"
	"chat/proto"
)

// serve answers one request frame through the cluster key. With a key,
// the cluster's own services (cluster.MembersOnly: election, append,
// forward, ...) are answered only inside an authenticated envelope, and
// their answer goes back authenticated; the same services asked plainly
// get an erro "this cluster requires its key", logged. Clients' requests
// are served as they come. Without a key, every frame goes straight to
// the handler.
func (s *Server) serve(ctx context.Context, frame []byte) ([]byte, []proto.Publication) {
	inner, tag, err := s.key.Admit(frame, cluster.MembersOnly)
	if err != nil {
		s.refused.Refused("a cluster request", err, "service", proto.PeekService(frame))
		return s.handler.Refuse(frame, err.Error()), nil
	}
	reply, pubs := s.handler.Handle(ctx, inner)
	return s.key.Answer(tag, reply), pubs
}

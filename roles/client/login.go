package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"chat/privatedm"
	"chat/proto"
)

// Accounts (docs/PROTOCOL.md, "Accounts"). A /login with a password
// claims the name the first time and needs that password ever after; the
// server answers with a token, which the session keeps and sends with
// every request that acts as the user (publish, message, the history of
// its direct messages, logout). The login also publishes the user's public
// key, so that others can seal direct messages to it (private.go). When a
// server does not take the token (it expired, or the cluster lost it), the
// client logs in again by itself with the password it kept.

// loginCommand runs /login NAME with the password the user typed at its
// prompt, or the configured one (Config.Password).
func (s *session) loginCommand(ctx context.Context, cmd command) error {
	if cmd.cancelled {
		s.notice("login cancelled")
		return nil
	}
	password := s.cfg.Password
	if cmd.asked {
		password = cmd.password
	}
	return s.login(ctx, cmd.arg, password)
}

// login logs in as name, with password ("" : an open name, as in the
// standard). With a password it loads (or creates) the user's key pair
// and publishes its public key with the login.
func (s *session) login(ctx context.Context, name, password string) error {
	data := proto.Data{"user": name}
	var pair *privatedm.KeyPair
	var newKey string // the key file, when this login created it
	if password != "" {
		kp, path, created, err := s.loadKeyPair(name)
		if err != nil {
			return err
		}
		pair = &kp
		if created {
			newKey = path
		}
		data["password"], data["public_key"] = password, privatedm.EncodePublic(&kp.Public)
	}
	reply, err := s.request(ctx, proto.Login, data)
	if err != nil {
		return err
	}
	token, _ := reply["token"].(string)
	claimed, _ := reply["claimed"].(bool)

	old := s.user
	s.setIdentity(name, pair)
	s.token, s.password = token, password
	s.follow(name) // direct messages to name
	s.unfollow(old)
	switch {
	case password == "":
		s.notice("logged in as %s", name)
	case claimed:
		s.notice("logged in as %s (account claimed now)", name)
	default:
		s.notice("logged in as %s (account)", name)
	}
	if newKey != "" {
		s.notice("new key pair for private direct messages in %s; fingerprint %s", newKey, privatedm.Fingerprint(&pair.Public))
	}
	return nil
}

// loadKeyPair returns the key pair of user from the key directory,
// creating it the first time.
func (s *session) loadKeyPair(user string) (kp privatedm.KeyPair, path string, created bool, err error) {
	dir := s.cfg.KeyDir
	if dir == "" {
		if dir, err = privatedm.DefaultDir(); err != nil {
			return kp, "", false, fmt.Errorf("no key pair, so no login with a password: %w", err)
		}
	}
	path, err = privatedm.KeyFile(dir, user)
	if err != nil {
		return kp, "", false, fmt.Errorf("no key pair, so no login with a password: %w", err)
	}
	kp, created, err = privatedm.LoadOrCreate(dir, user)
	if err != nil {
		return kp, "", false, fmt.Errorf("no key pair, so no login with a password: %w", err)
	}
	return kp, path, created, nil
}

// logout ends the login: the token is revoked on every server, and the
// session forgets the user.
func (s *session) logout(ctx context.Context) error {
	if s.user == "" {
		return errors.New("you are not logged in")
	}
	if s.token != "" {
		_, err := s.request(ctx, proto.Logout, proto.Data{"user": s.user, "token": s.token})
		if err != nil && !TokenRefused(err) { // a token the server does not take is over already
			return err
		}
	}
	old, hadToken := s.user, s.token != ""
	s.setIdentity("", nil)
	s.token, s.password = "", ""
	s.unfollow(old)
	if hadToken {
		s.notice("logged out %s: the session's token is revoked on every server", old)
	} else {
		s.notice("logged out %s", old)
	}
	return nil
}

// requestAs sends a request that acts as the user, with the session's
// token when it has one. When the server does not take the token, the
// client logs in again with the kept password, once, and sends the
// request again with the new token and the same request_id (a refused
// request changed nothing).
func (s *session) requestAs(ctx context.Context, service string, data proto.Data) (proto.Data, error) {
	if s.token == "" {
		return s.request(ctx, service, data)
	}
	data["token"] = s.token
	reply, err := s.request(ctx, service, data)
	if !TokenRefused(err) || s.password == "" {
		return reply, err
	}
	s.notice("the server did not take the session's token (%v); logging in again as %s", err, s.user)
	if err := s.relogin(ctx); err != nil {
		return nil, fmt.Errorf("could not log in again: %w", err)
	}
	data["token"] = s.token
	return s.request(ctx, service, data)
}

// relogin logs the user in again with the kept password and key pair,
// for a new token.
func (s *session) relogin(ctx context.Context) error {
	data := proto.Data{"user": s.user, "password": s.password}
	if s.pair != nil {
		data["public_key"] = privatedm.EncodePublic(&s.pair.Public)
	}
	reply, err := s.request(ctx, proto.Login, data)
	if err != nil {
		return err
	}
	token, _ := reply["token"].(string)
	if token == "" {
		return errors.New("the login's reply has no token")
	}
	s.token = token
	s.notice("logged in again as %s", s.user)
	return nil
}

// TokenRefused reports whether err is a server's refusal of a request's
// token: not one of the user's live tokens, or expired. Both texts end in
// "log in again" (docs/PROTOCOL.md, "Accounts").
func TokenRefused(err error) bool {
	var refused *ReplyError
	return errors.As(err, &refused) && strings.Contains(refused.Text, "token") && strings.HasSuffix(refused.Text, "log in again")
}

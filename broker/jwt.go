package broker

// This file makes the NATS operator-mode objects the broker deals in: account
// JWTs for buses (signed with the operator's signing key), user JWTs and
// .creds for bindings (signed with the bus account's key), and the requests
// that push an account JWT to, or delete it from, the servers' resolvers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/hottopic-io/hottopic/internal/buses"
)

// Subjects of the resolver's system API ($SYS account only).
const (
	claimsUpdateSubject = "$SYS.REQ.CLAIMS.UPDATE"
	claimsDeleteSubject = "$SYS.REQ.CLAIMS.DELETE"
)

// accountJWT is the JWT of a bus account: JetStream on, the limits given,
// every revocation the bus record holds.
func accountJWT(b *Bus, l BusLimits, operatorSigner nkeys.KeyPair) (string, error) {
	ac := jwt.NewAccountClaims(b.Account)
	ac.Name = "hottopic-bus-" + b.ID
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		DiskStorage:   l.Disk,
		MemoryStorage: l.Memory,
		Streams:       l.Streams,
		Consumer:      l.Consumers,
	}
	ac.Limits.Conn = l.Connections
	ac.Limits.Subs = l.Subscriptions
	ac.SigningKeys.Add(b.SigningKey)
	for pub, at := range b.Revoked {
		ac.RevokeAt(pub, time.Unix(at, 0))
	}
	return ac.Encode(operatorSigner)
}

// internalAccountJWT is the account broker and scaler keep their state in:
// JetStream on, and the signing keys given (the broker's and the scaler's).
func internalAccountJWT(pub string, signingKeys []string, operatorSigner nkeys.KeyPair) (string, error) {
	ac := jwt.NewAccountClaims(pub)
	ac.Name = "HOTTOPIC"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{DiskStorage: jwt.NoLimit, MemoryStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	ac.SigningKeys.Add(signingKeys...)
	return ac.Encode(operatorSigner)
}

// issueUser makes a user of the account (buses.IssueUser).
func issueUser(name, account string, accountKey nkeys.KeyPair, perms jwt.Permissions, tags ...string) (creds, userPub string, err error) {
	return buses.IssueUser(name, account, accountKey, perms, tags...)
}

// userOption connects as a new unrestricted user of the account that
// signingKey (a signing key of account) signs for.
func userOption(name, account string, signingKey nkeys.KeyPair) (nats.Option, error) {
	creds, _, err := issueUser(name, account, signingKey, jwt.Permissions{})
	if err != nil {
		return nil, err
	}
	return credsOption(creds)
}

func credsOption(creds string) (nats.Option, error) { return buses.CredsOption(creds) }

// claimsResponse is the resolver's answer ($SYS.REQ.CLAIMS.UPDATE/DELETE).
type claimsResponse struct {
	Data  *struct{ Code int } `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// resolverRequest sends a claims request over the system account connection
// and waits for the first server's answer. With a cluster, every running
// server receives the request and stores the update (the first answer is one
// of them); a server that was down takes it from the others when the
// resolvers next compare (interval in its configuration).
func resolverRequest(ctx context.Context, sys *nats.Conn, subject, payload string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sys.RequestWithContext(ctx, subject, []byte(payload))
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return errors.New("no NATS server answers " + subject + ": is the server in operator mode with a full resolver (hottopic-broker init)?")
		}
		return fmt.Errorf("%s: %w", subject, err)
	}
	var r claimsResponse
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return fmt.Errorf("%s: unreadable answer", subject)
	}
	if r.Error != nil {
		return fmt.Errorf("%s refused: %s (code %d)", subject, r.Error.Description, r.Error.Code)
	}
	return nil
}

// pushAccount stores an account JWT in the resolvers; the servers apply it
// at once (revocations close the revoked users' connections).
func pushAccount(ctx context.Context, sys *nats.Conn, accountJWT string) error {
	return resolverRequest(ctx, sys, claimsUpdateSubject, accountJWT)
}

// deleteAccount removes an account from the resolvers (allow_delete).
func deleteAccount(ctx context.Context, sys *nats.Conn, account string, operatorSigner nkeys.KeyPair) error {
	pub, _ := operatorSigner.PublicKey()
	gc := jwt.NewGenericClaims(pub)
	gc.Data["accounts"] = []string{account}
	token, err := gc.Encode(operatorSigner)
	if err != nil {
		return err
	}
	return resolverRequest(ctx, sys, claimsDeleteSubject, token)
}

package topic

import (
	"crypto/sha256"
	"encoding/hex"
)

// The per-app path: dead letters sent back (redrive) and past events sent
// again (replay) go to one app only. They are published to
// hottopic.redrive.<app-guid>.<topic>, stored in the HOTTOPIC_REDRIVE work-queue
// stream, and read by exactly one consumer, the app's own, whose filter is
// that literal subject. No other app's consumer filters on it, and no topic
// stream stores it (topics under "hottopic." are refused), so nothing else can
// receive it.
const (
	// RedriveStream stores every event sent to one app only.
	RedriveStream = "HOTTOPIC_REDRIVE"
	// RedrivePrefix starts every subject of RedriveStream.
	RedrivePrefix = "hottopic.redrive."
)

// RedriveSubject is the subject of events sent to app appGUID only, on topic t.
func RedriveSubject(appGUID, t string) string { return RedrivePrefix + appGUID + "." + t }

// RedriveConsumerName is app appGUID's consumer on RedriveStream for topic t:
// readable and collision-free, as the topic's stream name is; hashed when that
// would be longer than 200 characters.
func RedriveConsumerName(appGUID, t string) string {
	if n := appGUID + "__" + StreamName(t); len(n) <= 200 {
		return n
	}
	sum := sha256.Sum256([]byte(t))
	return appGUID + "__" + streamPrefix + hex.EncodeToString(sum[:])[:2*hashLen]
}

// SettledPrefix starts the subject on which an app's sidecar says that an
// event from the per-app path was settled (taken, or dead-lettered again):
// hottopic.settled.<app-guid>. Core NATS only; no stream stores it.
const SettledPrefix = "hottopic.settled."

// SettledSubject is where app appGUID's sidecars report settled events.
func SettledSubject(appGUID string) string { return SettledPrefix + appGUID }

// RedriveReadyPrefix starts the subject on which `hottopic redrive` and
// `replay` tell an app's running sidecars that its consumer on the per-app
// stream exists now: hottopic.redrive-ready.<app-guid>. Core NATS only. The
// consumers are made on first use, so idle apps cost the server nothing.
const RedriveReadyPrefix = "hottopic.redrive-ready."

// RedriveReadySubject is where app appGUID's sidecars hear of new consumers.
func RedriveReadySubject(appGUID string) string { return RedriveReadyPrefix + appGUID }

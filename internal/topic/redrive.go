package topic

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

// RedriveFilter is the filter of app appGUID's consumer on RedriveStream:
// every topic's events sent to it alone.
func RedriveFilter(appGUID string) string { return RedrivePrefix + appGUID + ".>" }

// RedriveConsumerName is app appGUID's one consumer on RedriveStream, for
// all its topics: the GUID, as for its consumers on topic streams.
func RedriveConsumerName(appGUID string) string { return appGUID }

// RedriveTopic is the topic of subject, an event on app appGUID's per-app
// path; ok is false for a subject that is not.
func RedriveTopic(appGUID, subject string) (t string, ok bool) {
	prefix := RedrivePrefix + appGUID + "."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", false
	}
	return subject[len(prefix):], true
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

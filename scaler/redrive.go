package scaler

import "github.com/hottopic-io/hottopic/internal/topic"

// The per-app path (topic.RedriveStream) counts toward an app's lag, so a
// redrive or replay to an app scaled to zero starts it. Its consumers exist
// only once something was sent to the app alone, so a missing stream or
// consumer there is no lag, not an unknown one.

// watchRedrive adds the per-app stream to the streams read each cycle.
func watchRedrive(watch map[string]string) {
	watch[topic.RedriveStream] = topic.RedrivePrefix + ">"
}

// redriveLag is what waits for app guid on the per-app path of its topics.
func redriveLag(lg lags, guid string, topics []string) int64 {
	var n int64
	for _, t := range topics {
		if l, ok, _ := lg.consumerLag(topic.RedriveStream, topic.RedriveConsumerName(guid, t)); ok {
			n += l
		}
	}
	return n
}

package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hottopic-io/hottopic/internal/ce"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// api is the sidecar's own HTTP API for the app: publish, health, metrics.
type api struct {
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	m      *metrics
	known  *provision.StreamCache // topics known to have a stream
	mode   string
	topics func() []string
}

func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /publish/{topic...}", a.publish)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	return mux
}

type publishReply struct {
	Topic     string `json:"topic"`
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("topic")
	if err := topic.Validate(t); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.nc.IsConnected() {
		a.m.topic(t).pubAPIErr.Inc()
		writeError(w, http.StatusServiceUnavailable, "NATS is unreachable; the event was not stored")
		return
	}
	limit := a.nc.MaxPayload()
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read the request body")
		return
	}
	if int64(len(body)) > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "the event is larger than the NATS payload limit")
		return
	}
	msg := &nats.Msg{Subject: t, Header: nats.Header{}, Data: body}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		msg.Header.Set("Content-Type", ct)
	}
	if id := r.Header.Get(jetstream.MsgIDHeader); id != "" {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	for k, v := range r.Header {
		if lk := strings.ToLower(k); (strings.HasPrefix(lk, "ce-") || lk == "traceparent" || lk == "tracestate") && len(v) > 0 {
			msg.Header[lk] = v
		}
	}
	// The request is an event in the HTTP binding; stored in the NATS one.
	if err := ce.Ingest(msg.Header, body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), publishWait)
	defer cancel()
	// Only to a topic that has a stream: without one, no app is mapped to
	// it, and the event would be thrown away. The API never makes streams
	// (hottopic publish refuses the same case).
	ok, err := a.known.Exists(ctx, t)
	if err != nil {
		a.m.topic(t).pubAPIErr.Inc()
		a.log.Warn("publish failed", "topic", t, "error", err)
		writeError(w, http.StatusServiceUnavailable, "the event was not stored: cannot look up the topic's stream: "+err.Error())
		return
	}
	if !ok {
		a.m.topic(t).pubAPIErr.Inc()
		writeError(w, http.StatusConflict, notMapped(t))
		return
	}
	ack, err := a.js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) { // deleted since we looked
		a.known.Forget(t)
		a.m.topic(t).pubAPIErr.Inc()
		writeError(w, http.StatusConflict, notMapped(t))
		return
	}
	if err != nil {
		a.m.topic(t).pubAPIErr.Inc()
		code := http.StatusServiceUnavailable
		if errors.Is(err, context.Canceled) {
			code = http.StatusRequestTimeout
		}
		a.log.Warn("publish failed", "topic", t, "error", err)
		writeError(w, code, "the event was not stored: "+err.Error())
		return
	}
	a.m.topic(t).pubAPIOK.Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(publishReply{Topic: t, Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate})
}

func notMapped(t string) string {
	return "no stream stores topic " + t + " yet: map an app to it first; the event was not stored"
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	status, code := "ok", http.StatusOK
	natsState := "connected"
	if !a.nc.IsConnected() {
		status, code, natsState = "degraded", http.StatusServiceUnavailable, strings.ToLower(a.nc.Status().String())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "nats": natsState, "mode": a.mode, "topics": a.topics()})
}

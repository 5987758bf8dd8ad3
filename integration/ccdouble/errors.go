package ccdouble

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ccError is one entry of the v3 error envelope {"errors":[...]}.
type ccError struct {
	Status int    `json:"-"`
	Code   int    `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *ccError) Error() string { return e.Title + ": " + e.Detail }

// The codes and titles below are those of cloud_controller_ng errors/v2.yml.
func errNotAuthenticated() *ccError {
	return &ccError{http.StatusUnauthorized, 10002, "CF-NotAuthenticated", "Authentication error"}
}

func errInvalidAuthToken() *ccError {
	return &ccError{http.StatusUnauthorized, 1000, "CF-InvalidAuthToken", "Invalid Auth Token"}
}

func errNotAuthorized() *ccError {
	return &ccError{http.StatusForbidden, 10003, "CF-NotAuthorized", "You are not authorized to perform the requested action"}
}

func errInsufficientScope() *ccError {
	return &ccError{http.StatusForbidden, 10007, "CF-InsufficientScope", "Your token lacks the necessary scopes to access this resource."}
}

func errBadQuery(detail string) *ccError {
	return &ccError{http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: " + detail}
}

func errUnprocessable(detail string) *ccError {
	return &ccError{http.StatusUnprocessableEntity, 10008, "CF-UnprocessableEntity", detail}
}

func errParse() *ccError {
	return &ccError{http.StatusBadRequest, 1001, "CF-MessageParseError", "Request invalid due to parse error: invalid request body"}
}

func errResourceNotFound(what string) *ccError {
	return &ccError{http.StatusNotFound, 10010, "CF-ResourceNotFound", what + " not found"}
}

func errUnknownRequest() *ccError {
	return &ccError{http.StatusNotFound, 10000, "CF-NotFound", "Unknown request"}
}

func errFeatureDisabled(flag string) *ccError {
	return &ccError{http.StatusForbidden, 330002, "CF-FeatureDisabled", "Feature Disabled: " + flag}
}

// defaultError gives the CC error a fault of the given status carries when the
// test did not name one.
func defaultError(status int) *ccError {
	switch status {
	case http.StatusBadRequest:
		return errBadQuery("injected fault")
	case http.StatusUnauthorized:
		return errInvalidAuthToken()
	case http.StatusForbidden:
		return errNotAuthorized()
	case http.StatusNotFound:
		return errResourceNotFound("Resource")
	case http.StatusUnprocessableEntity:
		return errUnprocessable("injected fault")
	case http.StatusTooManyRequests:
		return &ccError{status, 10013, "CF-RateLimitExceeded", "Rate Limit Exceeded"}
	case http.StatusServiceUnavailable:
		return &ccError{status, 10015, "CF-ServiceUnavailable", "Service Unavailable"}
	case http.StatusBadGateway:
		return &ccError{status, 10001, "UnknownError", "An unknown error occurred."}
	default:
		return &ccError{status, 10001, "UnknownError", "An unknown error occurred."}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"errors":[{"code":10001,"title":"UnknownError","detail":"encoding response"}]}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeCCError(w http.ResponseWriter, e *ccError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cloud_controller"`)
	}
	writeJSON(w, e.Status, map[string]any{"errors": []*ccError{e}})
}

// writeUAAError writes the OAuth error body UAA uses.
func writeUAAError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

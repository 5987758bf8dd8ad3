package cfenv

import (
	"fmt"
	"net/url"
)

// Page is the pagination of a Cloud Controller v3 list.
type Page struct {
	Next *struct {
		Href string `json:"href"`
	} `json:"next"`
}

// NextURL is the URL of the next page on api, "" after the last one. It
// keeps the link's path and query only: a token sent with it never goes to a
// host other than the API the caller was given.
func (p Page) NextURL(api string) (string, error) {
	if p.Next == nil || p.Next.Href == "" {
		return "", nil
	}
	u, err := url.Parse(p.Next.Href)
	if err != nil {
		return "", fmt.Errorf("Cloud Controller sent a bad next-page link: %v", err)
	}
	return api + u.EscapedPath() + "?" + u.RawQuery, nil
}

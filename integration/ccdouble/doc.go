// Package ccdouble is the one Cloud Controller v3 + UAA test double of the
// project: a real HTTP server on 127.0.0.1 that speaks the v3 JSON shapes and
// error envelope ({"errors":[{"code","title","detail"}]}), rejects what CC
// rejects, issues decodable JWTs from a UAA token endpoint, and records every
// call for assertions. go-cfclient/v3 and the real cf CLI run against it.
//
//	cc := ccdouble.New(t)                                // closed by t.Cleanup
//	org := cc.AddOrg("acme")
//	space := cc.AddSpace(org, "prod")
//	cc.AddClient("scaler", "s3cret", ccdouble.SpaceDeveloper(space))
//	guid := cc.AddApp(space, "orders", map[string]string{"hottopic.io/mapped": "true"}, nil)
//
//	cfg, _ := config.New(cc.URL(), config.ClientCredentials("scaler", "s3cret"))
//	... use go-cfclient, then:
//	cc.App(guid).Instances, cc.ScaleCalls(guid), cc.CallsTo("PATCH", "/v3/apps/")
//
// See README.md for the whole API.
package ccdouble

package schemas_test

import (
	"bufio"
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/xygroup/xygroup/schemas"
)

// Every example validates against the schema its name gives.
func TestExamplesValidate(t *testing.T) {
	files, _ := fs.Glob(schemas.Files, "examples/*")
	if len(files) < 6 {
		t.Fatalf("only %d examples", len(files))
	}
	for _, f := range files {
		raw, _ := schemas.Files.ReadFile(f)
		name := strings.TrimPrefix(f, "examples/")
		schema := strings.SplitN(strings.TrimSuffix(strings.TrimSuffix(name, ".json"), ".ndjson"), "-", 2)[0]
		if schema == "commands" {
			sc := bufio.NewScanner(bytes.NewReader(raw))
			for sc.Scan() {
				if err := schemas.Validate(schemas.Command, sc.Bytes()); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			continue
		}
		if err := schemas.Validate(schema, raw); err != nil {
			t.Errorf("%s against %s: %v", name, schema, err)
		}
	}
}

func TestCommandSchemaRefuses(t *testing.T) {
	cases := map[string]string{
		"missing meeting":     `{"mode":"random"}`,
		"manual without list": `{"meetingRoomNumber":"1","mode":"manual"}`,
		"wrong type":          `{"meetingRoomNumber":910004217404}`,
		"unknown field":       `{"meetingRoomNumber":"1","dedline":"2026-01-01T00:00:00Z"}`,
		"bad deadline":        `{"meetingRoomNumber":"1","deadline":"tomorrow"}`,
		"fractional count":    `{"meetingRoomNumber":"1","groupCount":1.5}`,
		"member without type": `{"meetingRoomNumber":"1","mode":"manual","groupList":[{"memberList":[{"id":1}]}]}`,
		"bad mode":            `{"meetingRoomNumber":"1","mode":"auto"}`,
		"array":               `[]`,
	}
	for name, doc := range cases {
		err := schemas.Validate(schemas.Command, []byte(doc))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), "at /") {
			t.Errorf("%s: error without a location: %v", name, err)
		}
	}
	if err := schemas.Validate(schemas.Command, []byte(`{"meetingRoomNumber":"1","mode":"manual","groupList":[{"memberList":[{"id":1,"type":5}]}]}`)); err != nil {
		t.Fatal(err)
	}
}

// The AsyncAPI document is YAML with a channel for every subject, and every schema
// it references exists.
func TestAsyncAPIDocument(t *testing.T) {
	raw, _ := schemas.Files.ReadFile("asyncapi.yaml")
	var doc struct {
		AsyncAPI string `json:"asyncapi"`
		Channels map[string]struct {
			Address string `json:"address"`
		} `json:"channels"`
		Components struct {
			Messages map[string]struct {
				Payload struct {
					Schema struct {
						Ref string `json:"$ref"`
					} `json:"schema"`
				} `json:"payload"`
			} `json:"messages"`
		} `json:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.AsyncAPI, "3.") {
		t.Fatalf("asyncapi %q", doc.AsyncAPI)
	}
	want := map[string]bool{"xylink.groups.create": false, "xylink.groups.replay": false, "xylink.groups.created": false, "xylink.groups.failed.{class}": false, "xylink.groups.waiting": false}
	for _, ch := range doc.Channels {
		want[ch.Address] = true
	}
	for addr, seen := range want {
		if !seen {
			t.Errorf("no channel for %s", addr)
		}
	}
	for name, m := range doc.Components.Messages {
		if _, err := fs.Stat(schemas.Files, m.Payload.Schema.Ref); err != nil {
			t.Errorf("message %s: schema %q: %v", name, m.Payload.Schema.Ref, err)
		}
	}
}

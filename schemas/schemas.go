// Package schemas holds the JSON Schemas (draft 2020-12) of xygroup's command and
// events, the AsyncAPI document that ties them to subjects, and examples; and
// validates documents against them.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

var printer = message.NewPrinter(language.English)

//go:embed *.schema.json asyncapi.yaml examples
var Files embed.FS

// Names of the schemas.
const (
	Command = "command"
	Created = "created"
	Failed  = "failed"
	Waiting = "waiting"
	// Cancel is a cancel message; CancelRejected its answer for a command it
	// could not cancel.
	Cancel         = "cancel"
	CancelRejected = "cancel_rejected"
)

const base = "https://github.com/xygroup/xygroup/schemas/"

var (
	compileOnce sync.Once
	compiled    map[string]*jsonschema.Schema
	compileErr  error
)

func compile() {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	matches, _ := fs.Glob(Files, "*.schema.json")
	for _, name := range matches {
		raw, _ := Files.ReadFile(name)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			compileErr = fmt.Errorf("schemas: %s: %w", name, err)
			return
		}
		if err := c.AddResource(base+name, doc); err != nil {
			compileErr = fmt.Errorf("schemas: %s: %w", name, err)
			return
		}
	}
	compiled = map[string]*jsonschema.Schema{}
	for _, n := range []string{Command, Created, Failed, Waiting, Cancel, CancelRejected} {
		s, err := c.Compile(base + n + ".schema.json")
		if err != nil {
			compileErr = fmt.Errorf("schemas: compile %s: %w", n, err)
			return
		}
		compiled[n] = s
	}
}

// Validate checks a JSON document against the named schema. The error lists every
// problem with its location in the document, one per line.
func Validate(name string, doc []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return ValidateValue(name, inst)
}

// ValidateValue checks an already decoded document (from jsonschema.UnmarshalJSON,
// or json.Unmarshal with UseNumber) against the named schema.
func ValidateValue(name string, inst any) error {
	compileOnce.Do(compile)
	if compileErr != nil {
		return compileErr
	}
	s, ok := compiled[name]
	if !ok {
		return fmt.Errorf("schemas: no schema %q", name)
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if ok := asValidationError(err, &ve); ok {
			return &Error{Problems: flatten(ve)}
		}
		return err
	}
	return nil
}

// Error lists why a document does not match its schema.
type Error struct{ Problems []string }

func (e *Error) Error() string { return strings.Join(e.Problems, "; ") }

func asValidationError(err error, target **jsonschema.ValidationError) bool {
	ve, ok := err.(*jsonschema.ValidationError)
	*target = ve
	return ok
}

// flatten turns the library's tree of causes into "at /path: message" lines,
// leaves only, so a user sees what to fix rather than which keyword failed.
func flatten(ve *jsonschema.ValidationError) []string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			out = append(out, fmt.Sprintf("at %s: %s", loc, e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("(%d more)", len(out)-20))
	}
	return out
}

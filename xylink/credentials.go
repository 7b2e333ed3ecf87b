package xylink

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Secret is a credential. It prints, formats and marshals as [redacted], so that a
// struct holding one can be logged without leaking it; Reveal gives the value.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string   { return redactedOrEmpty(s) }
func (s Secret) GoString() string { return redactedOrEmpty(s) }

// MarshalJSON keeps secrets out of any JSON (logs, events, status).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redactedOrEmpty(s)) }

// UnmarshalJSON reads a secret from a tenants file.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("xylink: a secret must be a JSON string")
	}
	*s = Secret(v)
	return nil
}

// Reveal returns the secret's value, for signing only.
func (s Secret) Reveal() string { return string(s) }

func redactedOrEmpty(s Secret) string {
	if s == "" {
		return ""
	}
	return redacted
}

// Credentials are one enterprise's (tenant's) keys. With ClientID and ClientSecret
// set, signature 2.0 is used; otherwise signature 1.0 with Token.
type Credentials struct {
	EnterpriseID string   `json:"enterpriseId"`
	Token        Secret   `json:"token,omitempty"`
	ClientID     string   `json:"clientId,omitempty"`
	ClientSecret Secret   `json:"clientSecret,omitempty"`
	SignType     SignType `json:"signType,omitempty"`
	// Rate is the tenant's API requests per second across the cluster; 0 means the
	// configured default.
	Rate float64 `json:"rate,omitempty"`
}

// V2 reports whether these credentials use signature 2.0.
func (c Credentials) V2() bool { return c.ClientID != "" && c.ClientSecret != "" }

// Check reports missing or contradictory fields.
func (c Credentials) Check() error {
	if strings.TrimSpace(c.EnterpriseID) == "" {
		return errors.New("xylink: credentials without enterpriseId")
	}
	if (c.ClientID == "") != (c.ClientSecret == "") {
		return fmt.Errorf("xylink: enterprise %s: clientId and clientSecret go together", c.EnterpriseID)
	}
	if !c.V2() && c.Token == "" {
		return fmt.Errorf("xylink: enterprise %s: neither a token (signature 1.0) nor clientId/clientSecret (2.0)", c.EnterpriseID)
	}
	if _, err := ParseSignType(string(c.SignType)); err != nil {
		return fmt.Errorf("enterprise %s: %w", c.EnterpriseID, err)
	}
	if c.Rate < 0 {
		return fmt.Errorf("xylink: enterprise %s: negative rate", c.EnterpriseID)
	}
	return nil
}

// tenantsFile is the format of XYGROUP_TENANTS_FILE:
//
//	{"tenants": [{"enterpriseId": "...", "token": "..."},
//	             {"enterpriseId": "...", "clientId": "...", "clientSecret": "...", "signType": "SHA256", "rate": 10}]}
//
// A bare JSON array of the same objects is accepted too.
type tenantsFile struct {
	Tenants []Credentials `json:"tenants"`
}

// LoadTenants reads a tenants file and checks every entry. Errors name the file and
// the entry, never a secret.
func LoadTenants(path string) ([]Credentials, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	return ParseTenants(raw, path)
}

// ParseTenants parses the tenants file format; name is used in errors.
func ParseTenants(raw []byte, name string) ([]Credentials, error) {
	var list []Credentials
	trimmed := strings.TrimSpace(string(raw))
	if strings.HasPrefix(trimmed, "[") {
		err := strictUnmarshal(raw, &list)
		if err != nil {
			return nil, fmt.Errorf("tenants file %s: %w", name, err)
		}
	} else {
		var f tenantsFile
		if err := strictUnmarshal(raw, &f); err != nil {
			return nil, fmt.Errorf("tenants file %s: %w", name, err)
		}
		list = f.Tenants
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("tenants file %s: no tenants", name)
	}
	seen := map[string]bool{}
	for i, c := range list {
		if err := c.Check(); err != nil {
			return nil, fmt.Errorf("tenants file %s, entry %d: %w", name, i, err)
		}
		if seen[c.EnterpriseID] {
			return nil, fmt.Errorf("tenants file %s, entry %d: enterprise %s listed twice", name, i, c.EnterpriseID)
		}
		seen[c.EnterpriseID] = true
	}
	return list, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// json errors quote field names and types, never values, except for syntax
		// errors, which report offsets only.
		return err
	}
	return nil
}

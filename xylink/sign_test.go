package xylink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	exEnterprise = "0123456789abcdef0123456789abcdef01234567"
	exToken      = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
	exBody       = `{"meetingRoomNumber":"9001234567","groups":[{"name":"Group 1","members":[{"number":"18600000001"}]}]}`
)

func TestSignV1WorkedExamples(t *testing.T) {
	if len(exBody) != 101 {
		t.Fatalf("example body is %d bytes, want 101", len(exBody))
	}
	cases := []struct {
		name, method, path, query, body, want string
		token                                 string
	}{
		{"dynamicGroup POST", "POST", "conferenceControl/meeting/dynamicGroup",
			"enterpriseId=" + exEnterprise, exBody, "V068AmQ+gwKVxMVoEDUgxlnmcNTT+4s1G4gZOjQtflI=", exToken},
		{"meetingStatus GET, empty body", "GET", "conferenceControl/9001234567/meetingStatus",
			"enterpriseId=" + exEnterprise, "", "UF6M9qRj5YasMOWYXhlOLxnweyZC8xl05fdpmuE/+gg=", exToken},
		{"JavaScript toolkit vector", "POST", "preSignature", "h=www.baidu.com", `{"title":"hello world"}`,
			"QlPwJkMt5tC1iexHw/v6UlfRrhHmXcg90hZsIEIr9j0=", "1234567890"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := SignV1(c.token, c.method, c.path, c.query, []byte(c.body))
			if got != c.want {
				t.Fatalf("SignV1 = %s, want %s", got, c.want)
			}
		})
	}
	if got := escapeSignature("V068AmQ+gwKVxMVoEDUgxlnmcNTT+4s1G4gZOjQtflI="); got != "V068AmQ%2BgwKVxMVoEDUgxlnmcNTT%2B4s1G4gZOjQtflI%3D" {
		t.Fatalf("escaped signature = %s", got)
	}
}

// The body hash covers the first 100 bytes, so a multi-byte character that straddles
// byte 100 is cut: only its leading bytes are signed. A reference computation from
// the specification's formula checks every cut position of a 3-byte character.
func TestSignV1HashesBytesNotCharacters(t *testing.T) {
	reference := func(body []byte) string {
		sum := sha256.Sum256(body[:min(len(body), 100)])
		sts := "POST\np\na=1\n" + base64.StdEncoding.EncodeToString(sum[:])
		mac := hmac.New(sha256.New, []byte(exToken))
		mac.Write([]byte(sts))
		return base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	prefix := `{"meetingRoomNumber":"910004217404","mode":"manual","groupList":[{"groupName":"`
	straddled := 0
	for pad := 0; pad < 6; pad++ {
		body := prefix + strings.Repeat("x", 97-len(prefix)+pad) + "分组讨论一" + `"}]}`
		b := []byte(body)
		got := SignV1(exToken, "POST", "p", "a=1", b)
		if want := reference(b); got != want {
			t.Fatalf("pad %d: SignV1 = %s, reference %s", pad, got, want)
		}
		if !utf8.RuneStart(b[100]) {
			straddled++
			// Cutting at a character boundary instead would sign different bytes.
			cut := 100
			for !utf8.RuneStart(b[cut]) {
				cut--
			}
			if reference(b[:cut]) == got {
				t.Fatalf("pad %d: character-boundary truncation gives the same signature", pad)
			}
		}
		// Bytes after 100 are not covered; byte 99 is.
		tail := append(append([]byte{}, b[:100]...), "tail differs"...)
		if SignV1(exToken, "POST", "p", "a=1", tail) != got {
			t.Fatalf("pad %d: signature depends on bytes after 100", pad)
		}
		changed := append([]byte{}, b...)
		changed[99] ^= 0x01
		if SignV1(exToken, "POST", "p", "a=1", changed) == got {
			t.Fatalf("pad %d: byte 99 not covered", pad)
		}
	}
	if straddled == 0 {
		t.Fatal("no case put a multi-byte character across byte 100")
	}
}

func TestCanonicalQuery(t *testing.T) {
	cases := map[string]string{
		"":                                 "",
		"enterpriseId=e1":                  "enterpriseId=e1",
		"z=1&enterpriseId=e1&signature=x":  "enterpriseId=e1&z=1",
		"signature=abc%2B&b=2&a=%E5%88%86": "a=%E5%88%86&b=2",
		"b=2&a=1&a=0":                      "a=1&a=0&b=2",
	}
	for in, want := range cases {
		if got := canonicalQuery(in); got != want {
			t.Errorf("canonicalQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSigningPath(t *testing.T) {
	cases := map[string]string{
		"/api/rest/external/v1/conferenceControl/meeting/dynamicGroup": "conferenceControl/meeting/dynamicGroup",
		"/private/api/rest/external/v2/x/y":                            "x/y",
		"/preSignature":                                                "preSignature",
	}
	for in, want := range cases {
		if got := SigningPath(in); got != want {
			t.Errorf("SigningPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSignV2WorkedExample(t *testing.T) {
	headers := map[string]string{
		HeaderClientID:  "MyClientId0001",
		HeaderSignType:  "MD5",
		HeaderTimestamp: "1700000000000",
		HeaderNonce:     "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
	}
	uri := "/api/rest/external/v1/conferenceControl/meeting/dynamicGroup?enterpriseId=" + exEnterprise + "&signature=signature"
	got := SignV2(SignMD5, "MySignSecret0001", "POST", headers, uri, []byte(exBody))
	if want := "051B143E5AEE2AB248267DC2DF29CC34"; got != want {
		t.Fatalf("SignV2 = %s, want %s", got, want)
	}
	// x-xy-sign itself and empty headers are not signed.
	headers[HeaderSign] = "anything"
	headers["x-xy-empty"] = ""
	if again := SignV2(SignMD5, "MySignSecret0001", "POST", headers, uri, []byte(exBody)); again != got {
		t.Fatalf("x-xy-sign or empty header changed the signature")
	}
}

func TestSignV2Types(t *testing.T) {
	h := map[string]string{HeaderClientID: "c", HeaderTimestamp: "1", HeaderNonce: "n"}
	seen := map[string]SignType{}
	for _, st := range []SignType{SignMD5, SignSHA256, SignHMACSHA256} {
		h[HeaderSignType] = string(st)
		s := SignV2(st, "secret", "POST", h, "/x?a=1", []byte("{}"))
		wantLen := map[SignType]int{SignMD5: 32, SignSHA256: 64, SignHMACSHA256: 64}[st]
		if len(s) != wantLen {
			t.Errorf("%s: length %d", st, len(s))
		}
		if prev, dup := seen[s]; dup {
			t.Errorf("%s equals %s", st, prev)
		}
		seen[s] = st
	}
	if _, err := ParseSignType("sha1"); err == nil {
		t.Fatal("ParseSignType accepted sha1")
	}
	if st, _ := ParseSignType("hmac_sha256"); st != SignHMACSHA256 {
		t.Fatal("ParseSignType lower case")
	}
}

func TestSignatureURLEncoding(t *testing.T) {
	// The query carries the URL-encoded Base64 and decodes back to it.
	sig := "a+b/c=="
	q, err := url.ParseQuery("signature=" + escapeSignature(sig))
	if err != nil || q.Get("signature") != sig {
		t.Fatalf("round trip: %v %q", err, q.Get("signature"))
	}
}

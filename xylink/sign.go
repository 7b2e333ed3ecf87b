package xylink

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// bodyHashBytes is how much of the body signature 1.0 covers. XYLink's SDKs hash
// the first 100 bytes of the UTF-8 body (bytes, not characters), so a multi-byte
// character may be cut in half; that is what the platform verifies.
const bodyHashBytes = 100

// apiPathPrefix precedes the signed PATH of signature 1.0:
// /api/rest/external/v1/conferenceControl/... signs "conferenceControl/...".
const apiPathPrefix = "/api/rest/external/"

// SignV1 computes a signature 1.0 as standard Base64 (not yet URL-encoded).
//
//	stringToSign = METHOD \n PATH \n QUERY \n Base64(SHA-256(body[:100]))
//	signature    = Base64(HMAC-SHA256(token, stringToSign))
//
// path is the part after /api/rest/external/vN/ (see SigningPath); rawQuery is the
// query as sent, with or without the signature parameter (it is dropped).
func SignV1(token, method, path, rawQuery string, body []byte) string {
	head := body
	if len(head) > bodyHashBytes {
		head = head[:bodyHashBytes]
	}
	sum := sha256.Sum256(head)
	stringToSign := strings.ToUpper(method) + "\n" + path + "\n" + canonicalQuery(rawQuery) + "\n" +
		base64.StdEncoding.EncodeToString(sum[:])
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SigningPath turns a URL path into the PATH that signature 1.0 signs: what follows
// /api/rest/external/vN/. A path without that prefix is returned without its
// leading slash.
func SigningPath(urlPath string) string {
	if i := strings.Index(urlPath, apiPathPrefix); i >= 0 {
		rest := urlPath[i+len(apiPathPrefix):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return rest[j+1:]
		}
		return ""
	}
	return strings.TrimPrefix(urlPath, "/")
}

// canonicalQuery sorts the raw query's parameters by key (stable, so repeated keys
// keep their order), drops signature and joins them with '&'. Values stay exactly
// as they appear in the URL: the platform signs the raw text, not decoded values.
func canonicalQuery(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	kept := parts[:0]
	for _, p := range parts {
		if p == "" || queryKey(p) == "signature" {
			continue
		}
		kept = append(kept, p)
	}
	sort.SliceStable(kept, func(i, j int) bool { return queryKey(kept[i]) < queryKey(kept[j]) })
	return strings.Join(kept, "&")
}

func queryKey(pair string) string {
	k, _, _ := strings.Cut(pair, "=")
	return k
}

// SignType selects the digest of signature 2.0.
type SignType string

const (
	SignMD5        SignType = "MD5"
	SignSHA256     SignType = "SHA256"
	SignHMACSHA256 SignType = "HMAC_SHA256"
)

// ParseSignType accepts the names of XYGROUP's configuration (case-insensitive);
// empty means MD5, the platform's default.
func ParseSignType(s string) (SignType, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "MD5":
		return SignMD5, nil
	case "SHA256", "SHA-256":
		return SignSHA256, nil
	case "HMAC_SHA256", "HMAC-SHA256", "HMACSHA256":
		return SignHMACSHA256, nil
	}
	return "", fmt.Errorf("xylink: unknown sign type %q (want MD5, SHA256 or HMAC_SHA256)", s)
}

// Signature 2.0 header names.
const (
	HeaderClientID  = "x-xy-clientid"
	HeaderSignType  = "x-xy-signtype"
	HeaderTimestamp = "x-xy-timestamp"
	HeaderNonce     = "x-xy-nonce"
	HeaderSign      = "x-xy-sign"
)

// SignV2 computes x-xy-sign for signature 2.0:
//
//	stringToSign = METHOD \n HEADERS \n URI \n md5hex(body) \n signSecret + "&"
//
// headers are the x-xy-* headers (names in lower case); x-xy-sign and empty values
// are left out and the rest sorted by name. uri is path + "?" + raw query, exactly
// as sent (the SDK's literal "&signature=signature" included).
func SignV2(signType SignType, signSecret, method string, headers map[string]string, uri string, body []byte) string {
	names := make([]string, 0, len(headers))
	for k, v := range headers {
		k = strings.ToLower(k)
		if v == "" || k == HeaderSign || !strings.HasPrefix(k, "x-xy-") {
			continue
		}
		names = append(names, k)
	}
	sort.Strings(names)
	pairs := make([]string, len(names))
	for i, k := range names {
		pairs[i] = k + "=" + headerValue(headers, k)
	}
	bodySum := md5.Sum(body)
	stringToSign := strings.ToUpper(method) + "\n" + strings.Join(pairs, "&") + "\n" + uri + "\n" +
		hex.EncodeToString(bodySum[:]) + "\n" + signSecret + "&"

	var digest []byte
	switch signType {
	case SignSHA256:
		s := sha256.Sum256([]byte(stringToSign))
		digest = s[:]
	case SignHMACSHA256:
		mac := hmac.New(sha256.New, []byte(signSecret+"&"))
		mac.Write([]byte(stringToSign))
		digest = mac.Sum(nil)
	default:
		s := md5.Sum([]byte(stringToSign))
		digest = s[:]
	}
	return strings.ToUpper(hex.EncodeToString(digest))
}

func headerValue(headers map[string]string, lowerName string) string {
	if v, ok := headers[lowerName]; ok {
		return v
	}
	for k, v := range headers {
		if strings.ToLower(k) == lowerName {
			return v
		}
	}
	return ""
}

// escapeSignature URL-encodes a Base64 signature for the query (+ / = encoded).
func escapeSignature(sig string) string { return url.QueryEscape(sig) }

package xylink

import (
	"strings"
	"testing"
)

func intp(i int) *int { return &i }

func TestValidate(t *testing.T) {
	member := func(id int64) MemberSpec { return MemberSpec{ID: id, Type: 5, ParticipantNumber: "18961782725"} }
	ok := []CreateGroupsRequest{
		{MeetingRoomNumber: "910004217404"},
		{MeetingRoomNumber: "910004217404", Mode: ModeRandom, GroupCount: intp(3), GroupName: "讨论"},
		{MeetingRoomNumber: "910004217404", Mode: ModeManual, GroupList: []GroupSpec{
			{GroupName: "分组1", MemberList: []MemberSpec{member(1)}},
			{GroupName: "分组2", MemberList: []MemberSpec{member(2), {ID: 3, Type: 1}}}}},
	}
	for i, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("valid request %d rejected: %v", i, err)
		}
	}
	many := make([]GroupSpec, MaxGroups+1)
	for i := range many {
		many[i] = GroupSpec{MemberList: []MemberSpec{member(int64(i + 1))}}
	}
	bad := map[string]struct {
		req  CreateGroupsRequest
		want string
	}{
		"no meeting":          {CreateGroupsRequest{}, "meetingRoomNumber is required"},
		"spaces in number":    {CreateGroupsRequest{MeetingRoomNumber: "9100 0421"}, "printable"},
		"long number":         {CreateGroupsRequest{MeetingRoomNumber: strings.Repeat("9", 65)}, "longer than 64"},
		"bad mode":            {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: "auto"}, "mode must be"},
		"zero groups":         {CreateGroupsRequest{MeetingRoomNumber: "1", GroupCount: intp(0)}, "groupCount"},
		"too many groups":     {CreateGroupsRequest{MeetingRoomNumber: "1", GroupCount: intp(MaxGroups + 1)}, "groupCount"},
		"manual no list":      {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual}, "groupList is required"},
		"empty member list":   {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual, GroupList: []GroupSpec{{GroupName: "a"}}}, "memberList is empty"},
		"member without id":   {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual, GroupList: []GroupSpec{{MemberList: []MemberSpec{{Type: 5}}}}}, ".id must be"},
		"member without type": {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual, GroupList: []GroupSpec{{MemberList: []MemberSpec{{ID: 4}}}}}, ".type must be"},
		"member twice": {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual, GroupList: []GroupSpec{
			{MemberList: []MemberSpec{member(7)}}, {MemberList: []MemberSpec{member(7)}}}}, "already in groupList[0]"},
		"long group name":    {CreateGroupsRequest{MeetingRoomNumber: "1", GroupName: strings.Repeat("分", 65)}, "longer than 64 characters"},
		"bad utf-8 name":     {CreateGroupsRequest{MeetingRoomNumber: "1", GroupName: "\xff"}, "not valid UTF-8"},
		"groupList too long": {CreateGroupsRequest{MeetingRoomNumber: "1", Mode: ModeManual, GroupList: many}, "more than 100"},
	}
	for name, c := range bad {
		err := c.req.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", name, err, c.want)
		}
	}
}

func TestEncodeRequestKeepsCharacters(t *testing.T) {
	b, err := EncodeRequest(&CreateGroupsRequest{MeetingRoomNumber: "1", GroupName: "分组<1>&"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"meetingRoomNumber":"1","groupName":"分组<1>&"}`; string(b) != want {
		t.Fatalf("EncodeRequest = %s, want %s", b, want)
	}
}

func TestParseTenants(t *testing.T) {
	good := `{"tenants":[{"enterpriseId":"e1","token":"t1"},{"enterpriseId":"e2","clientId":"c","clientSecret":"s","signType":"SHA256","rate":5}]}`
	list, err := ParseTenants([]byte(good), "t.json")
	if err != nil || len(list) != 2 || !list[1].V2() || list[1].Rate != 5 || list[0].Token.Reveal() != "t1" {
		t.Fatalf("ParseTenants = %+v, %v", list, err)
	}
	if _, err := ParseTenants([]byte(`[{"enterpriseId":"e1","token":"t1"}]`), "a.json"); err != nil {
		t.Fatalf("bare array: %v", err)
	}
	for name, in := range map[string]string{
		"empty":         `{"tenants":[]}`,
		"no id":         `[{"token":"secret-value-1"}]`,
		"no key":        `[{"enterpriseId":"e1"}]`,
		"half 2.0":      `[{"enterpriseId":"e1","clientId":"c"}]`,
		"duplicate":     `[{"enterpriseId":"e1","token":"a"},{"enterpriseId":"e1","token":"b"}]`,
		"unknown field": `[{"enterpriseId":"e1","tokn":"secret-value-1"}]`,
		"bad sign type": `[{"enterpriseId":"e1","token":"secret-value-1","signType":"SHA1"}]`,
		"secret number": `[{"enterpriseId":"e1","token":12345678}]`,
	} {
		_, err := ParseTenants([]byte(in), "t.json")
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "secret-value-1") || strings.Contains(err.Error(), "12345678") {
			t.Errorf("%s: error shows a secret: %v", name, err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := Credentials{EnterpriseID: "e1", Token: "tok-123", ClientSecret: "sec-456"}
	for _, s := range []string{c.Token.String(), c.ClientSecret.GoString()} {
		if s != "[redacted]" {
			t.Errorf("secret printed as %q", s)
		}
	}
}

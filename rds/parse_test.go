package rds_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/rds-fence/rds-fence/rds"
)

// Captured-format text (see /work/shared/routeros-sample.txt), written with
// LF here and converted to CRLF by pdCRLF where the case says so.
const (
	pdLegend = `Flags: X - disabled; E - empty; B - block-device; M - mounted; F - formatting; 
r - raid-member; e - encrypted; t - nvme-tcp-exported; i - iscsi-exported; s - 
smb-shared; n - nfs-shared; m - media-shared 
`
	pdPVCEntry = ` 3    type=file slot="pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11" slot-default="" 
      parent="" fs=- model="/storage-pool/kubernetes-volumes/pvc-5c1e7d42-8f0b-
      4a53-9a41-2f0c7a1b9e11.img" sector-size=512 size=53 687 091 200 
      mount-filesystem=yes mount-read-only=no compress=no raid-master=none 
      nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.20
      00-02.com.mikrotik:pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11" 
      nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no 
      smb-sharing=no media-sharing=no file-path=/storage-pool/kubernetes-volume
      s/pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11.img file-size=50.0GiB 
      file-offset=0 

`
	pdPoolEntry = ` 1 BM type=partition slot="storage-pool" slot-default="nvme1-part1" 
      parent="nvme1" partition-number=1 partition-offset=1 048 576 fs=btrfs 
      sector-size=4096 size=1 099 511 627 776 mount-point="storage-pool" 
      file-system=btrfs free=1 037 234 601 984 use=6% mount-filesystem=yes 
      mount-read-only=no compress=no raid-master=none nvme-tcp-export=no 
      iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no 

`
	pdSlot = "pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11"
)

func pdCRLF(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// pdKV builds a property map from key, value pairs.
func pdKV(kv ...string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var (
	pdPVCProps = pdKV("type", "file", "slot", pdSlot, "slot-default", "", "parent", "", "fs", "-",
		"model", "/storage-pool/kubernetes-volumes/"+pdSlot+".img", "sector-size", "512", "size", "53687091200",
		"mount-filesystem", "yes", "mount-read-only", "no", "compress", "no", "raid-master", "none",
		"nvme-tcp-export", "yes", "nvme-tcp-server-port", "4420", "nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:"+pdSlot,
		"nvme-tcp-server-allow-host-name", "", "iscsi-export", "no", "nfs-sharing", "no", "smb-sharing", "no",
		"media-sharing", "no", "file-path", "/storage-pool/kubernetes-volumes/"+pdSlot+".img", "file-size", "50.0GiB",
		"file-offset", "0")
	pdPVCKeys = []string{"type", "slot", "slot-default", "parent", "fs", "model", "sector-size", "size",
		"mount-filesystem", "mount-read-only", "compress", "raid-master", "nvme-tcp-export", "nvme-tcp-server-port",
		"nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name", "iscsi-export", "nfs-sharing", "smb-sharing",
		"media-sharing", "file-path", "file-size", "file-offset"}
	pdPoolProps = pdKV("type", "partition", "slot", "storage-pool", "slot-default", "nvme1-part1", "parent", "nvme1",
		"partition-number", "1", "partition-offset", "1048576", "fs", "btrfs", "sector-size", "4096",
		"size", "1099511627776", "mount-point", "storage-pool", "file-system", "btrfs", "free", "1037234601984",
		"use", "6%", "mount-filesystem", "yes", "mount-read-only", "no", "compress", "no", "raid-master", "none",
		"nvme-tcp-export", "no", "iscsi-export", "no", "nfs-sharing", "no", "smb-sharing", "no", "media-sharing", "no")
)

// pdWant is the expected shape of one record; keys is checked when set.
type pdWant struct {
	index          int
	flags, comment string
	props          map[string]string
	keys           []string
}

type pdCase struct {
	name    string
	in      string
	want    []pdWant
	wantErr error  // sentinel the error must wrap
	errSub  string // text the error message must contain
}

var pdCases = []pdCase{
	{name: "sample pvc disk CRLF", in: pdCRLF(pdLegend + pdPVCEntry),
		want: []pdWant{{index: 3, props: pdPVCProps, keys: pdPVCKeys}}},
	{name: "sample pool partition CRLF", in: pdCRLF(pdLegend + pdPoolEntry),
		want: []pdWant{{index: 1, flags: "BM", props: pdPoolProps}}},
	{name: "LF line ends", in: pdLegend + pdPoolEntry + pdPVCEntry,
		want: []pdWant{{index: 1, flags: "BM", props: pdPoolProps}, {index: 3, props: pdPVCProps}}},
	{name: "legend only when nothing matches", in: pdCRLF(pdLegend), want: nil},
	{name: "legend Columns header and blank lines", in: pdCRLF("\n" + pdLegend + "Columns: SLOT, TYPE\n\n" + pdPoolEntry + "\n\n"),
		want: []pdWant{{index: 1, flags: "BM", props: pdPoolProps}}},
	{name: "empty output", in: "", want: nil},
	{name: "blank lines only", in: "\r\n  \r\n\n", want: nil},
	{name: "stray carriage returns", in: strings.ReplaceAll(pdCRLF(pdLegend+pdPoolEntry), "\r\n", "\r\r\n") +
		" 4    type=fi\rle slot=\"x\" \r\n",
		want: []pdWant{{index: 1, flags: "BM", props: pdPoolProps}, {index: 4, props: pdKV("type", "file", "slot", "x")}}},
	{name: "flags X BM and none", in: pdCRLF(pdLegend +
		" 0    type=file slot=\"a\" \n\n 1 BM type=partition slot=\"b\" \n\n 2 X  type=file slot=\"c\" \n      size=512 \n\n"),
		want: []pdWant{
			{index: 0, props: pdKV("type", "file", "slot", "a")},
			{index: 1, flags: "BM", props: pdKV("type", "partition", "slot", "b")},
			{index: 2, flags: "X", props: pdKV("type", "file", "slot", "c", "size", "512")},
		}},
	{name: "three flag letters two digit index", in: pdCRLF(pdLegend + "12 BMt type=file slot=\"a\" \n       nvme-tcp-export=yes \n\n"),
		want: []pdWant{{index: 12, flags: "BMt", props: pdKV("type", "file", "slot", "a", "nvme-tcp-export", "yes")}}},
	{name: "four digit index column", in: pdCRLF(" 998 X  type=file slot=\"a\" \n        size=1 \n\n9999 BM type=file slot=\"b\" \n\n"),
		want: []pdWant{
			{index: 998, flags: "X", props: pdKV("type", "file", "slot", "a", "size", "1")},
			{index: 9999, flags: "BM", props: pdKV("type", "file", "slot", "b")},
		}},
	{name: "wide index column and continuation starting with digits", in: pdCRLF(pdLegend +
		" 9999 BM type=file slot=\"a\" sector-size=512 size=53 687 \n" +
		"         091 200 mount-filesystem=yes \n\n" +
		"10000    type=file slot=\"b\" size=1 073 741 824 \n" +
		"         123 fs=- \n\n"),
		want: []pdWant{
			{index: 9999, flags: "BM", props: pdKV("type", "file", "slot", "a", "sector-size", "512", "size", "53687091200", "mount-filesystem", "yes")},
			{index: 10000, props: pdKV("type", "file", "slot", "b", "size", "1073741824123", "fs", "-")},
		}},
	{name: "mid-token wraps quoted and unquoted", in: pdCRLF(
		" 0    model=\"/storage-pool/kubernetes-volumes/pvc-5c1e7d42-8f0b-\n" +
			"      4a53-9a41-2f0c7a1b9e11.img\" nvme-tcp-server-nqn=\"nqn.20\n" +
			"      00-02.com.mikrotik:pvc-1\" file-path=/storage-pool/kubernetes-volume\n" +
			"      s/pvc-1.img nvme-tcp-server-al\n" +
			"      low-host-name=\"\" \n"),
		want: []pdWant{{index: 0, props: pdKV("model", "/storage-pool/kubernetes-volumes/"+pdSlot+".img",
			"nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:pvc-1", "file-path", "/storage-pool/kubernetes-volumes/pvc-1.img",
			"nvme-tcp-server-allow-host-name", "")}}},
	{name: "mid-token wrap inside quotes at a space", in: pdCRLF(" 0    comment=\"a\n       b\" x=\"c \n      d\" \n"),
		want: []pdWant{{index: 0, props: pdKV("comment", "a b", "x", "c d")}}},
	{name: "comment after index", in: pdCRLF(pdLegend + " 0  ;;; my comment\n      type=file slot=\"c\" \n\n 1    type=file \n"),
		want: []pdWant{
			{index: 0, comment: "my comment", props: pdKV("type", "file", "slot", "c")},
			{index: 1, props: pdKV("type", "file")},
		}},
	{name: "comment with flags wrapped over two lines", in: pdCRLF(" 0 X    ;;; a long comment that \n        wraps here \n        type=file \n"),
		want: []pdWant{{index: 0, flags: "X", comment: "a long comment that wraps here", props: pdKV("type", "file")}}},
	{name: "flags alone on the first line", in: pdCRLF(" 1 BM \n      type=partition slot=\"p\" \n\n 2 X  \n\n"),
		want: []pdWant{{index: 1, flags: "BM", props: pdKV("type", "partition", "slot", "p")}, {index: 2, flags: "X", props: pdKV()}}},
	{name: "quoted escapes", in: pdCRLF(` 0    a="q\"b\\s\$d\?e\_f" b="\n\r\t\a\b\f\v" c="\C3\A9\41\ab\41" d="\7e" e="\z" ` + "\n"),
		want: []pdWant{{index: 0, props: pdKV("a", `q"b\s$d?e f`, "b", "\n\r\t\a\b\f\v", "c", "éA\abA", "d", "~", "e", `\z`)}}},
	{name: "keys containing other keys", in: pdCRLF(" 0    sector-size=512 size=53 687 091 200 file-size=50.0GiB \n 1    size=1 sector-size=4096 \n"),
		want: []pdWant{
			{index: 0, props: pdKV("sector-size", "512", "size", "53687091200", "file-size", "50.0GiB")},
			{index: 1, props: pdKV("size", "1", "sector-size", "4096")},
		}},
	{name: "trailing spaces trimmed", in: pdCRLF(strings.Join(pdTrimLines(pdLegend+pdPVCEntry+pdPoolEntry), "\n")),
		want: []pdWant{{index: 3, props: pdPVCProps, keys: pdPVCKeys}, {index: 1, flags: "BM", props: pdPoolProps}}},
	{name: "entry without index", in: "name=\"x\" size=3\r\n  type=file\r\n",
		want: []pdWant{{index: -1, props: pdKV("name", "x", "size", "3", "type", "file")}}},
	{name: "file print detail with dates", in: pdCRLF(" 0 name=\"storage-pool/kubernetes-volumes/pvc-1.img\" type=\".img file\" \n" +
		"   size=50.0GiB last-modified=2024-01-25 10:12:03 \n\n 1 name=\"b\" creation-time=jan/02/1970 00:00:00 \n"),
		want: []pdWant{
			{index: 0, props: pdKV("name", "storage-pool/kubernetes-volumes/pvc-1.img", "type", ".img file", "size", "50.0GiB", "last-modified", "2024-01-25 10:12:03")},
			{index: 1, props: pdKV("name", "b", "creation-time", "jan/02/1970 00:00:00")},
		}},
	{name: "duplicate key keeps last value", in: " 0    a=1 b=2 a=3\r\n",
		want: []pdWant{{index: 0, props: pdKV("a", "3", "b", "2"), keys: []string{"a", "b"}}}},
	{name: "empty unquoted value", in: " 0    a= b=2\r\n",
		want: []pdWant{{index: 0, props: pdKV("a", "", "b", "2")}}},

	{name: "token without equals sign", in: pdCRLF(pdLegend + " 0    type=file \n      garbage slot=\"x\" \n"),
		wantErr: rds.ErrUnexpectedOutput, errSub: "line 5"},
	{name: "unterminated quote", in: " 0    slot=\"abc\r\n", wantErr: rds.ErrUnexpectedOutput, errSub: "line 1"},
	{name: "text after closing quote", in: " 0    slot=\"a\"b=1\r\n", wantErr: rds.ErrUnexpectedOutput},
	{name: "upper-case key", in: " 0    Type=file\r\n", wantErr: rds.ErrUnexpectedOutput},
	{name: "garbage instead of a listing", in: "hello world\r\n", wantErr: rds.ErrUnexpectedOutput, errSub: "line 1"},
	{name: "garbage after a blank line following the legend", in: pdCRLF(pdLegend + "\nhello\n"), wantErr: rds.ErrUnexpectedOutput},
	{name: "index too large", in: " 12345678901 type=file\r\n", wantErr: rds.ErrUnexpectedOutput},
	{name: "index glued to text", in: " 1x type=file\r\n", wantErr: rds.ErrUnexpectedOutput},
	{name: "error message on stdout", in: "failure: not enough space\r\n", wantErr: rds.ErrOutOfSpace},
	{name: "no such item", in: "no such item\r\n", wantErr: rds.ErrNotFound},
	{name: "error after the legend", in: pdCRLF(pdLegend + "failure: item with this slot already exists\n"), wantErr: rds.ErrAlreadyExists},
	{name: "error after entries", in: pdCRLF(pdPoolEntry + "failure: not enough space\n"), wantErr: rds.ErrOutOfSpace},
}

func pdTrimLines(s string) []string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return lines
}

func TestParseDetail(t *testing.T) {
	for _, tc := range pdCases {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := rds.ParseDetail(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("err = %q, want it to contain %q", err, tc.errSub)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(recs) != len(tc.want) {
				t.Fatalf("got %d records, want %d: %+v", len(recs), len(tc.want), recs)
			}
			for i, w := range tc.want {
				r := recs[i]
				if r.Index != w.index || r.Flags != w.flags || r.Comment != w.comment {
					t.Errorf("record %d: index/flags/comment = %d/%q/%q, want %d/%q/%q", i, r.Index, r.Flags, r.Comment, w.index, w.flags, w.comment)
				}
				if !maps.Equal(r.Props, w.props) {
					t.Errorf("record %d props:\n got %q\nwant %q", i, r.Props, w.props)
				}
				if w.keys != nil && !slices.Equal(r.Keys, w.keys) {
					t.Errorf("record %d keys:\n got %q\nwant %q", i, r.Keys, w.keys)
				}
				pdCheckRecord(t, r)
			}
		})
	}
}

// pdCheckRecord asserts the Keys/Props invariant.
func pdCheckRecord(t *testing.T, r rds.Record) {
	t.Helper()
	if len(r.Keys) != len(r.Props) {
		t.Fatalf("len(Keys)=%d len(Props)=%d", len(r.Keys), len(r.Props))
	}
	for _, k := range r.Keys {
		if _, ok := r.Get(k); !ok {
			t.Fatalf("key %q missing from Props", k)
		}
	}
}

func TestRecordGet(t *testing.T) {
	var empty rds.Record
	if _, ok := empty.Get("size"); ok {
		t.Fatal("zero Record has a property")
	}
	recs, err := rds.ParseDetail(pdCRLF(pdLegend + pdPVCEntry))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := recs[0].Get("slot-default"); !ok || v != "" {
		t.Fatalf("Get(slot-default) = %q, %v", v, ok)
	}
	if _, ok := recs[0].Get("mount-point"); ok {
		t.Fatal("Get(mount-point) found a property the entry lacks")
	}
}

func TestClassifyOutput(t *testing.T) {
	cases := []struct {
		name, out string
		want      error
	}{
		{"not enough space", "failure: not enough space\r\n", rds.ErrOutOfSpace},
		{"no space left", "error: No space left on device", rds.ErrOutOfSpace},
		{"disk full", "  Disk full\r\n", rds.ErrOutOfSpace},
		{"no such item", "no such item\r\n", rds.ErrNotFound},
		{"no such file", "failure: no such file", rds.ErrNotFound},
		{"not found", "\r\n\r\nfailure: file not found\r\n", rds.ErrNotFound},
		{"slot exists", "failure: item with this slot already exists\r\n", rds.ErrAlreadyExists},
		{"already have", "failure: already have disk with such name", rds.ErrAlreadyExists},
		{"slot already used", "failure: slot already used", rds.ErrAlreadyExists},
		{"file exists", "failure: file exists", rds.ErrAlreadyExists},
		{"syntax error", "syntax error (line 1 column 11)\r\n", rds.ErrCommandFailed},
		{"expected end of command", "expected end of command (line 1 column 7)", rds.ErrCommandFailed},
		{"bad command name", "bad command name dsik (line 1 column 2)", rds.ErrCommandFailed},
		{"input does not match", "input does not match any value of type", rds.ErrInvalidArgument},
		{"invalid value", "invalid value for argument file-size", rds.ErrInvalidArgument},
		{"value out of range", "value of nvme-tcp-server-port out of range (0..65535)", rds.ErrInvalidArgument},
		{"missing value", "missing value(s) of argument(s) type", rds.ErrInvalidArgument},
		{"ambiguous value", "ambiguous value of type, more than one possible value matches input", rds.ErrInvalidArgument},
		{"unknown parameter", "Unknown parameter foo", rds.ErrCommandFailed},
		{"other failure", "failure: device busy\r\n", rds.ErrCommandFailed},
		{"other error", "ERROR: something odd", rds.ErrCommandFailed},
		{"empty", "", nil},
		{"blank", "\r\n \r\n", nil},
		{"legend", pdCRLF(pdLegend), nil},
		{"legend then failure line", pdCRLF(pdLegend + "failure: not enough space\n"), nil},
		{"entry line", pdCRLF(pdPVCEntry), nil},
		{"entry line mentioning not found", " 0  ;;; not found\r\n", nil},
		{"columns header", "Columns: SLOT\r\n", nil},
		{"unrelated text", "interrupted\r\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := rds.ClassifyOutput(tc.out)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var ce *rds.CommandError
			if !errors.As(err, &ce) || !errors.Is(err, tc.want) {
				t.Fatalf("got %#v, want *CommandError wrapping %v", err, tc.want)
			}
			if ce.Command != "" || ce.Output != strings.TrimSpace(strings.ReplaceAll(tc.out, "\r", "")) {
				t.Fatalf("CommandError = %+v", ce)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1073741824", 1 << 30, true},
		{"1 073 741 824", 1 << 30, true},
		{"53 687 091 200", 53687091200, true},
		{"0", 0, true},
		{"50.0GiB", 50 << 30, true},
		{"512.0MiB", 512 << 20, true},
		{"1.5TiB", 3 << 39, true},
		{"100KiB", 100 << 10, true},
		{"3B", 3, true},
		{"10G", 10 << 30, true},
		{"10M", 10 << 20, true},
		{"10K", 10 << 10, true},
		{"10T", 10 << 40, true},
		{"1.5B", 2, true},
		{"0.1KiB", 102, true},  // 102.4
		{"0.15KiB", 154, true}, // 153.6
		{"0.0005KiB", 1, true}, // 0.512
		{" 7GiB ", 7 << 30, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"7.9EiB", 9108079886394091110, true},
		{"", 0, false},
		{"-1", 0, false},
		{"-1GiB", 0, false},
		{"9223372036854775808", 0, false},
		{"8EiB", 0, false},
		{"9999999999T", 0, false},
		{"1.5", 0, false},
		{"50.GiB", 0, false},
		{".5GiB", 0, false},
		{"1.2.3GiB", 0, false},
		{"10g", 0, false},
		{"10 GiB", 0, false},
		{"1 0737", 0, false},
		{"1234 567", 0, false},
		{"1  073", 0, false},
		{"GiB", 0, false},
		{"0x10", 0, false},
		{"12KB", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := rds.ParseSize(tc.in)
			if !tc.ok {
				if !errors.Is(err, rds.ErrUnexpectedOutput) {
					t.Fatalf("ParseSize(%q) = %d, %v; want ErrUnexpectedOutput", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

// pdBuildListing renders n disk entries the way RouterOS wraps them at 80
// columns (a small local formatter: rds must not import rdssim).
func pdBuildListing(n int) string {
	var b strings.Builder
	b.WriteString(pdCRLF(pdLegend))
	idxW := len(fmt.Sprint(n - 1))
	indent := idxW + 4
	for i := range n {
		slot := fmt.Sprintf("pvc-%08x-8f0b-4a53-9a41-2f0c7a1b9e11", i)
		path := "/storage-pool/kubernetes-volumes/" + slot + ".img"
		words := strings.Fields(fmt.Sprintf(`type=file slot="%s" slot-default="" parent="" fs=- model="%s" `+
			`sector-size=512 size=53 687 091 200 mount-filesystem=yes mount-read-only=no compress=no raid-master=none `+
			`nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s" `+
			`nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:0c9e1f2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b" `+
			`iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no file-path=%s file-size=50.0GiB file-offset=0`,
			slot, path, slot, path))
		fmt.Fprintf(&b, "%*d %-2s ", idxW, i, "")
		col := indent
		for _, w := range words {
			if col+len(w)+1 > 80 && col > indent && indent+len(w)+1 <= 80 {
				b.WriteString("\r\n" + strings.Repeat(" ", indent))
				col = indent
			}
			for col+len(w)+1 > 80 {
				room := max(79-col, 0)
				b.WriteString(w[:room] + "\r\n" + strings.Repeat(" ", indent))
				w, col = w[room:], indent
			}
			b.WriteString(w + " ")
			col += len(w) + 1
		}
		b.WriteString("\r\n\r\n")
	}
	return b.String()
}

func TestParseDetailLargeListing(t *testing.T) {
	const n = 10000
	out := pdBuildListing(n)
	if per := len(out) / n; per < 650 || per > 900 {
		t.Fatalf("entry size %d bytes, want about 700", per)
	}
	recs, err := rds.ParseDetail(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("got %d records, want %d", len(recs), n)
	}
	for _, i := range []int{0, 9, 10, 999, 1000, n - 1} {
		r := recs[i]
		slot := fmt.Sprintf("pvc-%08x-8f0b-4a53-9a41-2f0c7a1b9e11", i)
		if r.Index != i || r.Props["slot"] != slot || r.Props["size"] != "53687091200" ||
			r.Props["file-path"] != "/storage-pool/kubernetes-volumes/"+slot+".img" ||
			r.Props["nvme-tcp-server-nqn"] != "nqn.2000-02.com.mikrotik:"+slot || len(r.Keys) != 23 {
			t.Fatalf("record %d = %+v", i, r)
		}
	}
}

func BenchmarkParseDetail10000(b *testing.B) {
	out := pdBuildListing(10000)
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	for b.Loop() {
		recs, err := rds.ParseDetail(out)
		if err != nil || len(recs) != 10000 {
			b.Fatalf("%d records, %v", len(recs), err)
		}
	}
}

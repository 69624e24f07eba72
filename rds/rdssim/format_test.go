package rdssim

import (
	"slices"
	"strings"
	"testing"

	"github.com/rds-fence/rds-fence/rds"
)

const fmtTestSlot = "pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11"

// fmtTestSample is /work/shared/routeros-sample.txt's first two listings.
const fmtTestSample = `Flags: X - disabled; E - empty; B - block-device; M - mounted; F - formatting; 
r - raid-member; e - encrypted; t - nvme-tcp-exported; i - iscsi-exported; s - 
smb-shared; n - nfs-shared; m - media-shared 
 3    type=file slot="pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11" slot-default="" 
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

const fmtTestPoolSample = `Flags: X - disabled; E - empty; B - block-device; M - mounted; F - formatting; 
r - raid-member; e - encrypted; t - nvme-tcp-exported; i - iscsi-exported; s - 
smb-shared; n - nfs-shared; m - media-shared 
 1 BM type=partition slot="storage-pool" slot-default="nvme1-part1" 
      parent="nvme1" partition-number=1 partition-offset=1 048 576 fs=btrfs 
      sector-size=4096 size=1 099 511 627 776 mount-point="storage-pool" 
      file-system=btrfs free=1 037 234 601 984 use=6% mount-filesystem=yes 
      mount-read-only=no compress=no raid-master=none nvme-tcp-export=no 
      iscsi-export=no nfs-sharing=no smb-sharing=no media-sharing=no 

`

func fmtTestPVC(index int, slot string) Entry {
	path := "/storage-pool/kubernetes-volumes/" + slot + ".img"
	return Entry{Index: index, Fields: []Field{
		{"type", "file", Plain}, {"slot", slot, Quoted}, {"slot-default", "", Quoted}, {"parent", "", Quoted},
		{"fs", "-", Plain}, {"model", path, Quoted}, {"sector-size", "512", Plain}, {"size", "53687091200", Grouped},
		{"mount-filesystem", "yes", Plain}, {"mount-read-only", "no", Plain}, {"compress", "no", Plain},
		{"raid-master", "none", Plain}, {"nvme-tcp-export", "yes", Plain}, {"nvme-tcp-server-port", "4420", Plain},
		{"nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:" + slot, Quoted}, {"nvme-tcp-server-allow-host-name", "", Quoted},
		{"iscsi-export", "no", Plain}, {"nfs-sharing", "no", Plain}, {"smb-sharing", "no", Plain},
		{"media-sharing", "no", Plain}, {"file-path", path, Plain}, {"file-size", "50.0GiB", Plain},
		{"file-offset", "0", Plain},
	}}
}

var fmtTestPool = Entry{Index: 1, Flags: "BM", Fields: []Field{
	{"type", "partition", Plain}, {"slot", "storage-pool", Quoted}, {"slot-default", "nvme1-part1", Quoted},
	{"parent", "nvme1", Quoted}, {"partition-number", "1", Plain}, {"partition-offset", "1048576", Grouped},
	{"fs", "btrfs", Plain}, {"sector-size", "4096", Plain}, {"size", "1099511627776", Grouped},
	{"mount-point", "storage-pool", Quoted}, {"file-system", "btrfs", Plain}, {"free", "1037234601984", Grouped},
	{"use", "6%", Plain}, {"mount-filesystem", "yes", Plain}, {"mount-read-only", "no", Plain},
	{"compress", "no", Plain}, {"raid-master", "none", Plain}, {"nvme-tcp-export", "no", Plain},
	{"iscsi-export", "no", Plain}, {"nfs-sharing", "no", Plain}, {"smb-sharing", "no", Plain},
	{"media-sharing", "no", Plain},
}}

func fmtTestCRLF(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func TestFormatDetailMatchesSample(t *testing.T) {
	cases := []struct {
		name  string
		entry Entry
		want  string
	}{
		{"pvc disk", fmtTestPVC(3, fmtTestSlot), fmtTestSample},
		{"pool partition", fmtTestPool, fmtTestPoolSample},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatDetail([]Entry{tc.entry}, DefaultWidth)
			if want := fmtTestCRLF(tc.want); got != want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestFormatDetailNoEntries(t *testing.T) {
	legend := strings.SplitAfter(fmtTestCRLF(fmtTestSample), "\r\n")[:3]
	if got, want := FormatDetail(nil, 0), strings.Join(legend, ""); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := FormatDetailLegend("", nil, 80); got != "" {
		t.Fatalf("no legend, no entries: got %q", got)
	}
}

// fmtTestEntries are awkward entries for the round trip.
func fmtTestEntries() []Entry {
	long := `/storage-pool/kubernetes volumes/"quoted" back\slash $HOME? tab	nl` + "\n" + `ctl` + "\x01\x7f" + `é/` + fmtTestSlot + ".img"
	es := []Entry{
		fmtTestPVC(0, fmtTestSlot),
		fmtTestPool,
		{Index: 2, Flags: "X", Comment: "my comment", Fields: []Field{{"type", "file", Plain}, {"slot", "pvc-disabled", Quoted}}},
		{Index: 3, Flags: "BMt", Comment: "a   longer comment that will wrap at forty columns for sure, with words",
			Fields: []Field{{"type", "file", Plain}, {"model", long, Quoted}, {"size", "1", Grouped}}},
		{Index: 4, Fields: []Field{{"type", "file", Plain}, {"a", `\`, Quoted}, {"b", `"`, Quoted}, {"c", `\"\\`, Quoted},
			{"d", "ends with space ", Quoted}, {"e", "  two  spaces  ", Quoted}, {"f", "\\AB\\ab\x07B\x0cB", Quoted}}},
		{Index: 5, Flags: "E"},
		{Index: 6, Comment: "only a comment"},
		{Index: 7, Fields: []Field{{"type", "file", Plain}, {"n0", "0", Grouped}, {"n3", "999", Grouped},
			{"n4", "1000", Grouped}, {"n7", "1048576", Grouped}, {"big", "9223372036854775807", Grouped},
			{"dash", "-", Grouped}, {"empty", "", Grouped}, {"pct", "6%", Plain}, {"sector-size", "512", Plain}}},
		{Index: 8, Fields: []Field{{"type", "file", Plain}, {"nvme-tcp-server-nqn",
			"nqn.2000-02.com.mikrotik:pvc-0123456789abcdef0123456789abcdef-with-a-very-long-tail-that-goes-on", Quoted},
			{"nvme-tcp-server-allow-host-name", "nqn.2014-08.org.nvmexpress:uuid:0c9e1f2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b", Quoted}}},
		{Index: 9, Fields: []Field{{"type", "file", Plain}, {"file-path",
			"/storage-pool/kubernetes-volumes/some/deeply/nested/directory/structure/" + fmtTestSlot + ".img", Plain}}},
		{Index: 10, Flags: "B", Fields: []Field{{"type", "file", Plain}, {"free", "1037234601984", Grouped},
			{"size", "1099511627776", Grouped}, {"use", "99%", Plain}}},
		{Index: 99, Fields: []Field{{"type", "file", Plain}, {"x.y_z", "1", Plain}}},
		{Index: 100, Flags: "M", Fields: []Field{{"type", "file", Plain}, {"slot", "100", Quoted}, {"size", "123", Grouped}}},
		{Index: 999, Fields: []Field{{"type", "file", Plain}, {"s", strings.Repeat("0123456789", 12), Quoted}}},
		{Index: 1000, Fields: []Field{{"type", "file", Plain}, {"p", strings.Repeat("abcdefghij", 12), Plain}}},
		{Index: 4242, Flags: "X", Comment: "x", Fields: []Field{{"type", "file", Plain}}},
		{Index: 9998, Fields: []Field{{"type", "file", Plain}, {"q", strings.Repeat(`"\$`, 30), Quoted}}},
		{Index: 9999, Flags: "BM", Fields: []Field{{"type", "file", Plain}, {"size", "53687091200", Grouped},
			{"file-size", "50.0GiB", Plain}}},
		{Index: 10000, Fields: []Field{{"type", "file", Plain}, {"size", "1073741824", Grouped},
			{"free", "1037234601984", Grouped}, {"slot", fmtTestSlot, Quoted}}},
		fmtTestPVC(10001, "pvc-ffffffff-ffff-ffff-ffff-ffffffffffff"),
	}
	return es
}

func TestFormatDetailRoundTrip(t *testing.T) {
	entries := fmtTestEntries()
	for _, width := range []int{80, 40, 24, 132} {
		for _, legend := range []string{DiskLegend, ""} {
			out := FormatDetailLegend(legend, entries, width)
			fmtTestCheckLines(t, out, width)
			recs, err := rds.ParseDetail(out)
			if err != nil {
				t.Fatalf("width %d: ParseDetail: %v\n%s", width, err, out)
			}
			if len(recs) != len(entries) {
				t.Fatalf("width %d: %d records, want %d", width, len(recs), len(entries))
			}
			for i, e := range entries {
				r := recs[i]
				if r.Index != e.Index || r.Flags != e.Flags || r.Comment != strings.Join(strings.Fields(e.Comment), " ") {
					t.Errorf("width %d entry %d: got index %d flags %q comment %q", width, e.Index, r.Index, r.Flags, r.Comment)
				}
				var keys []string
				for _, f := range e.Fields {
					keys = append(keys, f.Key)
					if got, ok := r.Get(f.Key); !ok || got != f.Value {
						t.Errorf("width %d entry %d: %s = %q, want %q", width, e.Index, f.Key, got, f.Value)
					}
				}
				if !slices.Equal(r.Keys, keys) {
					t.Errorf("width %d entry %d: keys %q, want %q", width, e.Index, r.Keys, keys)
				}
			}
		}
	}
}

// fmtTestCheckLines asserts CRLF line ends and the width limit.
func fmtTestCheckLines(t *testing.T, out string, width int) {
	t.Helper()
	if !strings.HasSuffix(out, "\r\n") || strings.Count(out, "\n") != strings.Count(out, "\r\n") ||
		strings.Count(out, "\r") != strings.Count(out, "\r\n") {
		t.Fatalf("width %d: output is not CRLF throughout", width)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(l) > width {
			t.Fatalf("width %d: line of %d columns: %q", width, len(l), l)
		}
	}
}

func TestFormatDetailWraps(t *testing.T) {
	var es []Entry
	for i := range 3 {
		es = append(es, fmtTestPVC(i, fmtTestSlot))
	}
	out := FormatDetail(es, DefaultWidth)
	fmtTestCheckLines(t, out, DefaultWidth)
	lines := strings.Split(out, "\r\n")
	var mid, between int
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i+1], "      ") { // next line is not a continuation
			continue
		}
		if strings.HasSuffix(lines[i], " ") {
			between++
		} else {
			mid++
		}
	}
	if mid == 0 || between == 0 {
		t.Fatalf("mid-token wraps %d, between-token wraps %d; want both:\n%s", mid, between, out)
	}
	if !strings.Contains(out, "\r\n      091 200 ") && !strings.Contains(out, "size=53 687 091 200 ") {
		t.Fatalf("grouped size missing:\n%s", out)
	}
	// A grouped number wrapped between its groups still parses.
	narrow := FormatDetail([]Entry{{Index: 0, Fields: []Field{{"type", "file", Plain}, {"sector-size", "512", Plain},
		{"size", "53687091200", Grouped}}}}, 44)
	if !strings.Contains(narrow, "\r\n      091 200 ") {
		t.Fatalf("want a continuation line starting with a digit group:\n%s", narrow)
	}
	recs, err := rds.ParseDetail(narrow)
	if err != nil || len(recs) != 1 || recs[0].Props["size"] != "53687091200" || recs[0].Props["sector-size"] != "512" {
		t.Fatalf("ParseDetail = %+v, %v", recs, err)
	}
}

func TestFormatError(t *testing.T) {
	for _, msg := range []string{"failure: not enough space", "no such item\r\n", "syntax error (line 1 column 5)\n"} {
		got := FormatError(msg)
		if got != strings.TrimRight(msg, "\r\n")+"\r\n" {
			t.Fatalf("FormatError(%q) = %q", msg, got)
		}
		if err := rds.ClassifyOutput(got); err == nil {
			t.Fatalf("ClassifyOutput(%q) = nil", got)
		}
	}
}

func TestHumanSize(t *testing.T) {
	cases := []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1023, "1023B"}, {1024, "1.0KiB"}, {1536, "1.5KiB"},
		{53687091200, "50.0GiB"}, {512 << 20, "512.0MiB"}, {3 << 39, "1.5TiB"}, {100 << 10, "100.0KiB"},
		{1 << 50, "1.0PiB"}, {1<<63 - 1, "8.0EiB"}, {-1536, "-1.5KiB"}, {-1 << 63, "-8.0EiB"},
	}
	for _, tc := range cases {
		if got := HumanSize(tc.n); got != tc.want {
			t.Errorf("HumanSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
		if tc.n >= 0 && tc.n < 1<<62 {
			if back, err := rds.ParseSize(HumanSize(tc.n)); err != nil || (tc.n%(1<<10) == 0 && back != tc.n) {
				t.Errorf("ParseSize(HumanSize(%d)) = %d, %v", tc.n, back, err)
			}
		}
	}
}

func TestFormatDetailTinyWidth(t *testing.T) {
	for _, width := range []int{1, 2, 5} {
		out := FormatDetail([]Entry{fmtTestPVC(10000, fmtTestSlot), {Index: 1, Comment: "c d"}}, width)
		if !strings.HasSuffix(out, "\r\n\r\n") || strings.Count(out, "\n") != strings.Count(out, "\r\n") {
			t.Fatalf("width %d: bad output %q", width, out)
		}
	}
}

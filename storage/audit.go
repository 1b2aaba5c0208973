package storage

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// AuditOptions configure Audit. No secret is needed.
type AuditOptions struct {
	// Verifier is the vault's checkpoint (audit) public key.
	Verifier note.Verifier
	// Origin, when set, is the origin every checkpoint must name.
	Origin string
	// Since is a signed checkpoint the auditor kept from an earlier visit;
	// every drive must extend it (append-only).
	Since []byte
}

// Problem is one finding: which drive, which record (-1: not about one
// record) and why.
type Problem struct {
	UUID   string `json:"uuid,omitempty"`
	Slot   int    `json:"slot,omitempty"`
	Path   string `json:"path"`
	Index  int64  `json:"index"`
	Reason string `json:"reason"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("drive %d (uuid %s, %s)", p.Slot, p.UUID, p.Path)
	if p.Index >= 0 {
		s += fmt.Sprintf(" record %d", p.Index)
	}
	return s + ": " + p.Reason
}

// AuditDrive summarises one audited replica.
type AuditDrive struct {
	Path         string `json:"path"`
	UUID         string `json:"uuid,omitempty"`
	Slot         int    `json:"slot,omitempty"`
	Records      uint64 `json:"records"`     // records covered by a verified checkpoint
	TreeSize     uint64 `json:"tree_size"`   // size of its latest verified checkpoint
	Checkpoints  int    `json:"checkpoints"` // checkpoint records verified
	Bytes        int64  `json:"bytes"`       // log bytes read
	Uncommitted  uint64 `json:"uncommitted"` // records after the last checkpoint (an interrupted batch)
	LagsBehindBy uint64 `json:"lags_behind"` // records other replicas have and this one lacks
	OK           bool   `json:"ok"`
}

// AuditReport is the result of Audit. Checkpoint is what the auditor keeps
// for the next visit (pass it as AuditOptions.Since).
type AuditReport struct {
	OK         bool         `json:"ok"`
	VaultID    string       `json:"vault_id,omitempty"`
	TreeSize   uint64       `json:"tree_size"`
	Root       string       `json:"root,omitempty"`
	Checkpoint string       `json:"checkpoint,omitempty"`
	Since      uint64       `json:"since_tree_size,omitempty"`
	Drives     []AuditDrive `json:"drives"`
	Problems   []Problem    `json:"problems"`
	Notes      []string     `json:"notes,omitempty"`
}

// String is the human summary.
func (r *AuditReport) String() string {
	var b strings.Builder
	r.WriteTo(&b)
	return b.String()
}

// WriteTo writes the human summary.
func (r *AuditReport) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	verdict := "OK"
	if !r.OK {
		verdict = fmt.Sprintf("FAILED: %d problem(s)", len(r.Problems))
	}
	fmt.Fprintf(&b, "audit: %s\nvault %s: tree size %d, root %s\n", verdict, r.VaultID, r.TreeSize, r.Root)
	if r.Since > 0 {
		fmt.Fprintf(&b, "append-only since the kept checkpoint of size %d: %v\n", r.Since, r.OK)
	}
	for _, d := range r.Drives {
		st := "ok"
		if !d.OK {
			st = "PROBLEMS"
		}
		fmt.Fprintf(&b, "  drive %d uuid %s %s: %s, %d records, %d checkpoints verified\n", d.Slot, d.UUID, d.Path, st, d.Records, d.Checkpoints)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  problem: %s\n", p)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if !r.OK {
		fmt.Fprintf(&b, "next step: run `coffre scrub` on the appliance to repair from healthy replicas\n")
	}
	n, err := w.Write(b.Bytes())
	return int64(n), err
}

type auditDrive struct {
	rep    AuditDrive
	dev    device
	sb     *superblock
	scan   *logScan
	err    error
	path   string
	sbErrs [2]error
}

// Audit verifies replicas read-only with only the public checkpoint key:
// both superblock copies, every record's header checksum, chain and payload
// hash, every checkpoint's signature and root, agreement between the
// replicas, and that every replica extends opts.Since. It returns an error
// only when it could not run at all; findings are in the report.
func Audit(paths []string, o AuditOptions) (*AuditReport, error) {
	if o.Verifier == nil {
		return nil, fmt.Errorf("storage: audit: no verifier key given (pass --audit-key)")
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("storage: audit: no drive given")
	}
	var since *Checkpoint
	if len(o.Since) > 0 {
		c, err := OpenCheckpoint(o.Since, o.Verifier, o.Origin)
		if err != nil {
			return nil, fmt.Errorf("storage: audit: the kept checkpoint does not verify with this key: %w", err)
		}
		since = &c
	}
	rep := &AuditReport{Problems: []Problem{}}
	ds := make([]*auditDrive, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		ad := &auditDrive{path: p, rep: AuditDrive{Path: p}}
		ds[i] = ad
		wg.Go(func() { ad.run(o) })
	}
	wg.Wait()
	defer func() {
		for _, d := range ds {
			if d.dev != nil {
				d.dev.Close()
			}
		}
	}()
	add := func(d *auditDrive, index int64, format string, args ...any) {
		p := Problem{Path: d.path, Index: index, Reason: fmt.Sprintf(format, args...)}
		if d.sb != nil {
			p.UUID, p.Slot = UUIDString(d.sb.UUID), d.sb.Slot
		}
		rep.Problems = append(rep.Problems, p)
	}
	var ref *auditDrive
	uuids := map[[16]byte]string{}
	for _, d := range ds {
		if d.err != nil {
			add(d, -1, "%s", trimPrefix(d.err.Error()))
		}
		if d.sb == nil {
			continue
		}
		for i, e := range [2]error{d.scan0(), d.scan1()} {
			if e != nil {
				add(d, -1, "%s superblock: %s", [2]string{"primary", "backup"}[i], trimPrefix(e.Error()))
			}
		}
		if rep.VaultID == "" {
			rep.VaultID = UUIDString(d.sb.VaultID)
		} else if UUIDString(d.sb.VaultID) != rep.VaultID {
			add(d, -1, "belongs to vault %s, not %s", UUIDString(d.sb.VaultID), rep.VaultID)
			continue
		}
		if other, ok := uuids[d.sb.UUID]; ok {
			add(d, -1, "same drive uuid as %s (a clone, or given twice)", other)
		}
		uuids[d.sb.UUID] = d.path
		if d.scan == nil {
			continue
		}
		if ref == nil || d.scan.cut > ref.scan.cut {
			ref = d
		}
	}
	if ref != nil {
		rs := ref.scan
		rep.TreeSize = uint64(rs.cut)
		if rs.cut > 0 {
			rep.TreeSize = uint64(rs.cut - 1)
			rep.Checkpoint = string(rs.lastCkpt)
			var fr frontier
			for _, r := range rs.recs[:rs.cut-1] {
				fr.add(r.leaf)
			}
			rep.Root = fr.root().String()
		}
		for _, d := range ds {
			if d.scan == nil {
				continue
			}
			s := d.scan
			// Where the walk stopped early: report, then check the rest at the
			// reference offsets so every damaged record is named.
			// Below the superblock's tree size every record was synced and
			// acknowledged: a stop there is damage. Beyond it, a torn tail.
			damaged := s.stopErr != nil && s.stopIndex < d.sb.TreeSize
			if damaged {
				add(d, int64(s.stopIndex), "%s", trimPrefix(s.stopErr.Error()))
				r := newBlockReader(d.dev, d.sb.DataEnd, 1<<20)
				for i := int(s.stopIndex) + 1; i < rs.cut; i++ {
					if err := checkRecord(r, rs.recs[i], uint64(i)); err != nil {
						add(d, int64(i), "%s", trimPrefix(err.Error()))
					}
				}
			} else if s.stopErr != nil || len(s.recs) > s.cut {
				rep.Notes = append(rep.Notes, fmt.Sprintf("drive %s: %d record(s) after the last checkpoint (an interrupted batch; the appliance drops it on next start)", d.path, len(s.recs)-s.cut))
			}
			d.rep.Uncommitted = uint64(len(s.recs) - s.cut)
			for i := 0; i < s.cut && i < rs.cut; i++ {
				if s.recs[i].leaf != rs.recs[i].leaf {
					add(d, int64(i), "disagrees with drive %s (uuid %s) from this record on (forked log)", ref.path, UUIDString(ref.sb.UUID))
					break
				}
			}
			if s.cut < rs.cut && !damaged {
				d.rep.LagsBehindBy = uint64(rs.cut - s.cut)
				rep.Notes = append(rep.Notes, fmt.Sprintf("drive %s lags %d records behind %s (offsite or unplugged; the appliance syncs it)", d.path, rs.cut-s.cut, ref.path))
			}
			// The superblock's checkpoint must verify and match the log.
			if len(d.sb.Checkpoint) > 0 {
				c, err := OpenCheckpoint(d.sb.Checkpoint, o.Verifier, o.Origin)
				if err != nil {
					add(d, -1, "superblock checkpoint: %s", trimPrefix(err.Error()))
				} else if c.Size >= uint64(len(s.recs)) || rootAt(s.recs, c.Size) != c.Hash {
					add(d, -1, "superblock checkpoint (size %d) does not match the drive's log", c.Size)
				}
			}
			if since != nil {
				ts := uint64(0)
				if s.cut > 0 {
					ts = uint64(s.cut - 1)
				}
				switch {
				case ts < since.Size:
					add(d, -1, "rolled back: latest checkpoint has %d records, older than the kept checkpoint's %d", ts, since.Size)
				case rootAt(s.recs, since.Size) != since.Hash:
					add(d, -1, "forked: the first %d records do not match the kept checkpoint", since.Size)
				}
				rep.Since = since.Size
			}
		}
	}
	for _, d := range ds {
		d.rep.OK = true
		for _, p := range rep.Problems {
			if p.Path == d.path {
				d.rep.OK = false
			}
		}
		rep.Drives = append(rep.Drives, d.rep)
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

func (d *auditDrive) scan0() error { return d.sbErrs[0] }
func (d *auditDrive) scan1() error { return d.sbErrs[1] }

// rootAt is the RFC 6962 root of the first n leaves.
func rootAt(recs []recInfo, n uint64) tlog.Hash {
	var fr frontier
	for _, r := range recs[:n] {
		fr.add(r.leaf)
	}
	return fr.root()
}

func (d *auditDrive) run(o AuditOptions) {
	dev, err := openDevice(d.path, false)
	if err != nil {
		d.err = err
		return
	}
	d.dev = dev
	d.sb, d.sbErrs = readSuperblock(dev)
	if d.sb == nil {
		d.err = fmt.Errorf("no valid superblock: not a coffre drive or both copies damaged")
		return
	}
	d.rep.UUID, d.rep.Slot = UUIDString(d.sb.UUID), d.sb.Slot
	s, err := scanLog(dev, d.sb, scanOpts{verifier: o.Verifier, origin: o.Origin, full: true})
	if err != nil {
		d.err = err
		return
	}
	d.scan = s
	d.rep.Records = uint64(s.cut)
	if s.cut > 0 {
		d.rep.TreeSize = uint64(s.cut - 1)
		d.rep.Bytes = s.end() - DataStart
	}
	for _, r := range s.recs[:s.cut] {
		if r.typ == TypeCheckpoint {
			d.rep.Checkpoints++
		}
	}
}

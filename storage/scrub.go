package storage

import (
	"context"
	"fmt"
)

// Repair is one record (or superblock, Index -1) that Scrub found bad on a
// drive, and whether it was rewritten from a verified copy.
type Repair struct {
	UUID     string `json:"uuid"`
	Slot     int    `json:"slot"`
	Path     string `json:"path"`
	Index    int64  `json:"index"`
	Reason   string `json:"reason"`
	From     string `json:"from,omitempty"` // uuid of the drive the good copy came from
	Repaired bool   `json:"repaired"`
}

func (r Repair) String() string {
	what := "superblock"
	if r.Index >= 0 {
		what = fmt.Sprintf("record %d", r.Index)
	}
	res := "NOT repaired"
	if r.Repaired {
		res = "repaired from " + r.From
	}
	return fmt.Sprintf("drive %d (uuid %s, %s): %s: %s: %s", r.Slot, r.UUID, r.Path, what, r.Reason, res)
}

// ScrubReport lists what Scrub checked and repaired.
type ScrubReport struct {
	Drives  int      `json:"drives"`
	Records uint64   `json:"records"` // records checked per drive
	Repairs []Repair `json:"repairs"`
}

// Unrepaired counts the repairs that failed.
func (s *ScrubReport) Unrepaired() int {
	n := 0
	for _, r := range s.Repairs {
		if !r.Repaired {
			n++
		}
	}
	return n
}

// Scrub reads every record on every present drive (active and
// quarantined), checks it against the tree (header, leaf hash, payload
// hash, padding), and rewrites each bad one from a verified copy on
// another drive. Damaged superblocks are rewritten. A quarantined drive
// whose every record then verifies becomes active again. progress gets
// records done and records to do over all drives.
func (v *Vault) Scrub(ctx context.Context, progress func(done, total uint64)) (ScrubReport, error) {
	defer v.lockWrite()()
	if v.closed {
		return ScrubReport{}, ErrClosed
	}
	if err := v.loadIndex(); err != nil {
		return ScrubReport{}, err
	}
	n := v.size()
	var ds []*drive
	for _, d := range v.drives {
		if d.dev != nil && d.sb != nil && (d.state == StateActive || d.state == StateQuarantined && d.repairable) {
			ds = append(ds, d)
		}
	}
	rep := ScrubReport{Drives: len(ds), Records: n}
	readers := map[*drive]*blockReader{}
	for _, d := range ds {
		readers[d] = newBlockReader(d.dev, d.sb.DataEnd, 1<<20)
	}
	total, done := n*uint64(len(ds)), uint64(0)
	for _, d := range ds {
		r := readers[d]
		bad := 0
		for i := uint64(0); i < n; i++ {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			done++
			if progress != nil && done%1024 == 0 {
				progress(done, total)
			}
			err := checkRecord(r, v.recs[i], i)
			if err == nil {
				continue
			}
			rp := Repair{UUID: UUIDString(d.uuid()), Slot: d.slot(), Path: d.path, Index: int64(i), Reason: trimPrefix(err.Error())}
			if src, err := v.repairRecord(d, i, ds, readers); err != nil {
				rp.Reason += "; " + trimPrefix(err.Error())
				bad++
			} else {
				rp.Repaired, rp.From = true, UUIDString(src.uuid())
				r.base = -1 // drop the cached window
				if err := checkRecord(r, v.recs[i], i); err != nil {
					rp.Repaired = false
					rp.Reason += "; still bad after rewrite: " + trimPrefix(err.Error())
					bad++
				}
			}
			v.log.Warn("storage: scrub", "uuid", rp.UUID, "slot", rp.Slot, "path", rp.Path, "index", i, "repaired", rp.Repaired, "reason", rp.Reason)
			rep.Repairs = append(rep.Repairs, rp)
		}
		if err := d.dev.Sync(); err != nil {
			v.fail(d, err)
			continue
		}
		// Superblocks: rewrite both copies if either is damaged.
		_, errs := readSuperblock(d.dev)
		if errs[0] != nil || errs[1] != nil {
			rp := Repair{UUID: UUIDString(d.uuid()), Slot: d.slot(), Path: d.path, Index: -1,
				Reason: fmt.Sprintf("primary: %v; backup: %v", errs[0], errs[1])}
			d.n, d.end = n, v.end
			e1 := v.writeSuperblock(d)
			e2 := v.writeSuperblock(d)
			if e1 == nil && e2 == nil {
				rp.Repaired, rp.From = true, "vault state"
			} else {
				bad++
			}
			rep.Repairs = append(rep.Repairs, rp)
		}
		if bad == 0 {
			if err := zeroTail(d.dev, v.end, d.sb.DataEnd); err != nil {
				v.fail(d, err)
				continue
			}
			if d.state == StateQuarantined || d.n != n {
				d.n, d.end = n, v.end
				if err := v.writeSuperblock(d); err != nil {
					v.fail(d, err)
					continue
				}
				d.state, d.reason, d.repairable = StateActive, "", false
			}
		}
	}
	if progress != nil {
		progress(total, total)
	}
	return rep, nil
}

// repairRecord copies record i to d from the first other drive whose copy
// verifies.
func (v *Vault) repairRecord(d *drive, i uint64, ds []*drive, readers map[*drive]*blockReader) (*drive, error) {
	ri, err := v.rec(i)
	if err != nil {
		return nil, err
	}
	for _, s := range ds {
		if s == d || s.state != StateActive {
			continue
		}
		rd := readers[s]
		if rd == nil {
			rd = newBlockReader(s.dev, s.sb.DataEnd, 1<<20)
		}
		if checkRecord(rd, ri, i) != nil {
			continue
		}
		if err := copyRange(context.Background(), s, d, ri.off, ri.off+ri.len, nil); err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("no verified copy on another drive")
}

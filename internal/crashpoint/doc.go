// Package crashpoint lets the kill tests stop a real coffre process with
// SIGKILL at a named moment, so that "killed in the middle of a job" is a
// fact of the test, not a matter of timing.
//
// Production builds compile Hit to nothing. A binary built with
// `-tags crashpoints` reads COFFRE_CRASHPOINT=NAME:N at start and kills
// itself (SIGKILL, no deferred code, no flush) on the N-th Hit(NAME).
//
// The points:
//
//	storage.write    a drive took one write of a batch (the other drives may
//	                 not have yet: the replicas are torn)
//	storage.append   a batch is durable on the write quorum, before the
//	                 superblocks and the catalog are updated
//	reencap.batch    a job committed a batch and has more to do
package crashpoint

// Env is the environment variable a crashpoints build reads.
const Env = "COFFRE_CRASHPOINT"

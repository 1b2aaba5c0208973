package appliance

import "github.com/ProtonMail/go-crypto/openpgp"

// IngestKeysForBench exposes the unsealed ingest key to the benchmarks,
// which time the envelope stage alone.
func IngestKeysForBench(a *Appliance) openpgp.EntityList { return a.ingest }

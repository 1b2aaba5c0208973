package appliance

import (
	"bytes"
	"context"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/ingest/envelope"
	"coffre/storage"
	"coffre/storage/catalog"
)

// IngestKeysForBench exposes the unsealed ingest key to the benchmarks,
// which time the envelope stage alone.
func IngestKeysForBench(a *Appliance) openpgp.EntityList { return a.ingest }

// BulkForBench fills a vault with n small item records (256-byte bodies, in
// committed batches of 1000, indexed as uploads are) for the start-up
// benchmark, calling progress after each batch.
func BulkForBench(a *Appliance, n int, progress func(done int)) error {
	body := make([]byte, 256)
	for done := 0; done < n; {
		k := min(1000, n-done)
		ps := make([]pending, k)
		for i := range ps {
			j := done + i
			ps[i] = pending{storage.TypeItem, catalog.Meta{Kind: catalog.KindItem, UserID: fmt.Sprint("bulk", j%1000), ItemID: fmt.Sprint("i", j), Version: 1,
				UploadID: envelope.NewUploadID(), ItemKind: "password", ContentType: "text/plain"}, bytes.NewReader(body)}
		}
		if _, err := a.commitBatch(context.Background(), ps); err != nil {
			return err
		}
		done += k
		if progress != nil {
			progress(done)
		}
	}
	return nil
}

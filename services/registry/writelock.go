package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// WriterKey is the orch_config key that serialises writes across registry
// processes (replicas, or two during a rolling update): a write validates
// the whole catalog but guards only the keys it writes, so two writers at
// once could each pass their check and together store an invalid catalog.
// The key holds a lease; selectors ignore it.
const WriterKey = "writer"

// writerPoll is how often a waiting writer looks at the lease again.
const writerPoll = 10 * time.Millisecond

// lease is the value of WriterKey.
type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

func writerName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "registry"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// lockWrites takes the cross-process write lease until the write's deadline
// (a holder that died mid-write blocks others until then at most) and
// returns its release. It waits while another registry holds a live lease.
func (st *store) lockWrites(ctx context.Context, holder string, until time.Time) (release func(), err error) {
	value, err := json.Marshal(lease{Holder: holder, Until: until})
	if err != nil {
		return nil, err
	}
	held := errors.New("another registry held the write lease " + bus.ConfigBucket + "/" + WriterKey + " until this write's deadline")
	waited := false
	for {
		rev, err := st.config.Create(ctx, WriterKey, value)
		if errors.Is(err, jetstream.ErrKeyExists) {
			rev, err = st.takeOverExpired(ctx, value)
		}
		if err != nil && waited && ctx.Err() != nil {
			// The deadline ran out while asking again, after waiting.
			return nil, fmt.Errorf("%w: %w: %w", ErrConflict, held, ctx.Err())
		}
		switch {
		case err == nil && rev > 0:
			return func() {
				// Deleting only our revision: after an expiry another
				// writer's lease must stay.
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = st.config.Delete(dctx, WriterKey, jetstream.LastRevision(rev))
			}, nil
		case err != nil:
			return nil, fmt.Errorf("%w: write lease %s/%s: %w", ErrUnavailable, bus.ConfigBucket, WriterKey, err)
		}
		waited = true
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w: %w", ErrConflict, held, ctx.Err())
		case <-time.After(writerPoll):
		}
	}
}

// takeOverExpired replaces a lease whose holder's deadline passed (it died
// mid-write). It returns revision 0 when the lease is live, or changed or
// went while it looked (the caller tries again).
func (st *store) takeOverExpired(ctx context.Context, value []byte) (uint64, error) {
	e, err := st.config.Get(ctx, WriterKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var held lease
	if json.Unmarshal(e.Value(), &held) == nil && time.Now().Before(held.Until) {
		return 0, nil
	}
	rev, err := st.config.Update(ctx, WriterKey, value, e.Revision())
	if isConflict(err) {
		return 0, nil
	}
	return rev, err
}

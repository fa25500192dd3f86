package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Two registries writing at once: one deletes an unused category while the
// other puts a model listing it. Each write alone is valid; both together
// would store a model whose category is gone. The write lease lets one
// validate against the other's result, so the catalog stays valid.
func TestTwoRegistriesKeepTheCatalogValid(t *testing.T) {
	h := start(t)
	other := &harness{t: t, srv: h.srv, nc: h.nc, client: h.client, js: h.js}
	b := other.run(Config{})
	code := exampleCatalog(t).Categories[0]
	for i := range 10 {
		cat := code
		cat.Name = fmt.Sprintf("skew%d", i)
		h.ok("categories.put", cat, nil)
		m := testModel()
		m.ID = fmt.Sprintf("skew-model-%d", i)
		m.OrchestrationCategories = []string{"code", cat.Name}

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = h.svc.deleteCategory(ctx, mustJSON(t, NameRequest{Name: cat.Name})) })
		wg.Go(func() { _, _ = b.putModel(ctx, mustJSON(t, m)) })
		wg.Wait()
		cancel()
		if _, err := h.load(); err != nil {
			t.Fatalf("round %d: the buckets hold an invalid catalog: %v", i, err)
		}
	}
}

func TestWriteLease(t *testing.T) {
	h := start(t)
	st := h.svc.st
	hold := func(until time.Time) {
		t.Helper()
		v, _ := json.Marshal(lease{Holder: "elsewhere", Until: until})
		if _, err := st.config.Put(t.Context(), WriterKey, v); err != nil {
			t.Fatal(err)
		}
	}
	put := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, err := h.svc.putModel(ctx, mustJSON(t, testModel()))
		return err
	}

	t.Run("a live lease held elsewhere makes a write wait, then give up", func(t *testing.T) {
		hold(time.Now().Add(time.Hour))
		if err := put(200 * time.Millisecond); !errors.Is(err, ErrConflict) {
			t.Fatalf("put = %v, want ErrConflict (503)", err)
		}
		if _, err := h.svc.st.models.Get(t.Context(), testModel().ID); err == nil {
			t.Fatal("the model was stored without the lease")
		}
	})
	t.Run("an expired lease (its holder died) is taken over", func(t *testing.T) {
		hold(time.Now().Add(-time.Second))
		if err := put(5 * time.Second); err != nil {
			t.Fatalf("put: %v", err)
		}
		if _, err := st.config.Get(t.Context(), WriterKey); err == nil {
			t.Fatal("the lease was not released after the write")
		}
	})
	t.Run("a lease released while waiting lets the write through", func(t *testing.T) {
		hold(time.Now().Add(time.Hour))
		go func() {
			time.Sleep(100 * time.Millisecond)
			_ = st.config.Delete(context.Background(), WriterKey)
		}()
		m := testModel()
		m.ID = "after-release"
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := h.svc.putModel(ctx, mustJSON(t, m)); err != nil {
			t.Fatalf("put: %v", err)
		}
	})
}

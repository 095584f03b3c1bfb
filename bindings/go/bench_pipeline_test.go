package tidemark

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCrossing: what one call into C costs here, for reading the other figures.
//   - noop: a bare cgo crossing (an empty C function);
//   - MonotonicMs: a crossing plus the library's clock read (every tracker call that takes
//     now_ms reads it on the C side);
//   - Ack: the handle guard (RWMutex RLock/RUnlock) plus a crossing plus one atomic load.
func BenchmarkCrossing(b *testing.B) {
	b.Run("noop", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			crossingNoop()
		}
	})
	b.Run("MonotonicMs", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			MonotonicMs()
		}
	})
	b.Run("Ack", func(b *testing.B) {
		tr, _ := progressSetup(b, 1)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tr.Ack()
		}
	})
}

// pipeCommit is one commit handed from the committer goroutine to the flusher goroutine.
type pipeCommit struct {
	off Offset
	ws  [4]WriterID
}

// pipeTracker is what the two-goroutine pipeline drives: tidemark or the pure-Go baseline.
type pipeTracker interface {
	Register() (WriterID, error)
	Commit(Offset, ...WriterID) error
	Flushed(WriterID, Offset) error
	FlushedMany([]WriterID, []Offset, []Status) (int, error)
}

// FlushedMany for the baseline: the whole batch under one lock acquisition (the batched
// counterpart of Flushed, so the batched comparison is like for like).
func (t *mutexTracker) FlushedMany(ws []WriterID, offs []Offset, _ []Status) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, id := range ws {
		w, ok := t.writers[id]
		if !ok {
			return i, ErrUnknownWriter
		}
		if !w.pending {
			continue
		}
		if off := offs[i]; !off.Less(w.lastSent) {
			w.pending = false
			w.epoch++
		} else if w.flushed.Less(off) {
			w.flushed = off
		}
	}
	t.advance()
	return 0, nil
}

// pipeline2 runs the pipeline workload (uniform writers, 4 per commit) with two goroutines: the committer (the
// benchmark goroutine) draws 4 distinct writers per commit out of n, commits, and sends the
// commit on a channel of 64 commits (the bounded lag) to one flusher goroutine, which reports
// each writer flushed: one Flushed call per report, or (batched) one FlushedMany per group
// of up to 64 commits it finds waiting. b.N counts writer-ops (4 per commit); the figure is
// the wall time until the flusher reported the last commit, per writer-op. tr nil: the
// channel and goroutines only (the harness's floor).
func pipeline2(b *testing.B, tr pipeTracker, n int, batched bool) {
	ws := make([]WriterID, n)
	for i := range ws {
		if tr != nil {
			ws[i], _ = tr.Register()
		} else {
			ws[i] = WriterID(i + 1)
		}
	}
	commits := (b.N + 3) / 4
	ch := make(chan pipeCommit, 64)
	done := make(chan error, 1)
	rng := uint64(88172645463325252)
	b.ResetTimer()
	start := time.Now()
	go func() { // the flusher
		rw := make([]WriterID, 0, 256)
		ro := make([]Offset, 0, 256)
		for c := range ch {
			if tr == nil {
				continue
			}
			if !batched {
				for _, w := range c.ws {
					if err := tr.Flushed(w, c.off); err != nil {
						done <- err
						return
					}
				}
				continue
			}
			rw, ro = rw[:0], ro[:0]
		gather:
			for {
				for _, w := range c.ws {
					rw, ro = append(rw, w), append(ro, c.off)
				}
				if len(rw) == cap(rw) {
					break
				}
				select {
				case next, ok := <-ch:
					if !ok {
						break gather
					}
					c = next
				default:
					break gather
				}
			}
			if failed, err := tr.FlushedMany(rw, ro, nil); err != nil || failed != 0 {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for tx := uint64(1); tx <= uint64(commits); tx++ {
		var c pipeCommit
		c.off = Offset{tx, 0}
	draw:
		for k := 0; k < 4; k++ {
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			w := ws[rng%uint64(n)]
			for _, p := range c.ws[:k] {
				if p == w {
					k--
					continue draw
				}
			}
			c.ws[k] = w
		}
		if tr != nil {
			if err := tr.Commit(c.off, c.ws[:]...); err != nil {
				close(ch)
				<-done
				b.Fatal(err)
			}
		}
		ch <- c
	}
	close(ch)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(commits*4), "ns/writer-op")
	if tr != nil {
		if got, want := ackOf(tr), uint64(commits); got != want {
			b.Fatalf("ack %d after the pipeline, want %d", got, want)
		}
	}
}

func ackOf(tr pipeTracker) uint64 {
	switch t := tr.(type) {
	case *Tracker:
		a, _ := t.Ack()
		return a
	case *mutexTracker:
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.ack
	}
	return 0
}

// BenchmarkPipeline: one committer goroutine, one flusher goroutine (pipeline2), tidemark
// against the pure-Go single-mutex tracker, at 10⁴ and 3·10⁵ writers.
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{10_000, 300_000} {
		label := "/N=" + strconv.Itoa(n)
		b.Run("tidemark-Flushed"+label, func(b *testing.B) {
			tr, _ := NewTracker(TrackerOptions{ExpectedWriters: n})
			defer tr.Close()
			pipeline2(b, tr, n, false)
		})
		b.Run("mutex-Flushed"+label, func(b *testing.B) {
			pipeline2(b, newMutexTracker(), n, false)
		})
		b.Run("tidemark-FlushedMany"+label, func(b *testing.B) {
			tr, _ := NewTracker(TrackerOptions{ExpectedWriters: n})
			defer tr.Close()
			pipeline2(b, tr, n, true)
		})
		b.Run("mutex-FlushedMany"+label, func(b *testing.B) {
			pipeline2(b, newMutexTracker(), n, true)
		})
		b.Run("channel-only"+label, func(b *testing.B) {
			pipeline2(b, nil, n, true)
		})
	}
}

// BenchmarkBatchPipeline: P producers push b.N messages of 64 B in all; one sink takes batches
// (count 512, linger 5 ms) and acks them; the timed run ends when Stop has drained everything
// (every message delivered: checked). ns/op is per message; msg/s is the throughput.
//   - tidemark-PushMany256: PushMany of 256 pre-built messages at a time; the sink takes each
//     batch with NextBatch (one fresh Go copy per batch);
//   - tidemark-PushMany256-into: the same, the sink reusing one Batch with NextBatchInto;
//   - tidemark-TryPush: one TryPush per message, NextBatch sink;
//   - chan-Message: baseline (a), a Message value per channel send (chanBatcher[Message]);
//   - chan-slice: baseline (b), a []byte header per send, referencing pre-built payloads.
func BenchmarkBatchPipeline(b *testing.B) {
	for _, producers := range []int{1, 2} {
		suffix := "/producers=" + itoa(producers)
		tidemark := func(into bool, produce func(b *testing.B, buf *BatchBuffer, n int)) func(b *testing.B) {
			return func(b *testing.B) {
				buf, _ := NewBatchBuffer(benchCfg)
				sink := drainingSink(buf, into)
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for p := 0; p < producers; p++ {
					wg.Add(1)
					go func(p int) {
						defer wg.Done()
						produce(b, buf, share(b.N, producers, p))
					}(p)
				}
				wg.Wait()
				r := stopAndWait(b, buf, sink)
				elapsed := time.Since(start)
				if r.Delivered != uint64(b.N) {
					b.Fatalf("delivered %d of %d", r.Delivered, b.N)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
			}
		}
		pushMany := func(b *testing.B, buf *BatchBuffer, n int) { pushAllMany(b, buf, benchMessages(256), n) }
		b.Run("tidemark-PushMany256"+suffix, tidemark(false, pushMany))
		b.Run("tidemark-PushMany256-into"+suffix, tidemark(true, pushMany))
		b.Run("tidemark-TryPush"+suffix, tidemark(false, func(_ *testing.B, buf *BatchBuffer, n int) {
			m := Message{Payload: make([]byte, benchPayload)}
			for i := n; i > 0; i-- {
				for errors.Is(buf.TryPush(m), ErrFull) {
					runtime.Gosched()
				}
			}
		}))
		b.Run("chan-Message"+suffix, func(b *testing.B) {
			chanPipeline(b, producers, benchMessages(256))
		})
		b.Run("chan-slice"+suffix, func(b *testing.B) {
			payloads := make([][]byte, 256)
			for i, m := range benchMessages(256) {
				payloads[i] = m.Payload
			}
			chanPipeline(b, producers, payloads)
		})
	}
}

// chanPipeline: the baseline pipeline; each producer sends its share of b.N items, cycling
// through the pre-built ones.
func chanPipeline[T any](b *testing.B, producers int, items []T) {
	var delivered atomic.Int64
	c := newChanBatcher(16384, 512, 5*time.Millisecond, func(ms []T) { delivered.Add(int64(len(ms))) })
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i, j := share(b.N, producers, p), 0; i > 0; i-- {
				c.Push(items[j])
				if j++; j == len(items) {
					j = 0
				}
			}
		}(p)
	}
	wg.Wait()
	c.Stop()
	elapsed := time.Since(start)
	if delivered.Load() != int64(b.N) {
		b.Fatalf("delivered %d of %d", delivered.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
}

package bench

// Latency histograms and throughput timelines for `appnode bench`.

import (
	"math/bits"
	"time"
)

// histSub is the number of buckets per power of two: every recorded
// latency is known to within 1/64 (1.6%) of its value.
const histSub = 64

// histBuckets covers every non-negative int64 nanosecond count.
const histBuckets = histSub + (63-6)*histSub

// histogram records durations in log-linear buckets, so that a run of
// millions of requests costs a few kilobytes and quantiles stay within
// 1.6%. The zero value is empty and ready; it is not safe for concurrent
// use (each load client has its own, merged at the end).
type histogram struct {
	counts []uint64 // allocated on first record
	n      uint64
	sum    time.Duration
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - 7 // v>>shift is in [64, 128)
	return histSub + shift*histSub + int(v>>shift) - histSub
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < histSub {
		return time.Duration(i)
	}
	shift := (i - histSub) / histSub
	low := uint64(histSub+(i-histSub)%histSub) << shift
	return time.Duration(low + (uint64(1)<<shift)/2)
}

func (h *histogram) record(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	h.counts[bucketOf(d)]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the duration below which a fraction q of the recorded
// values fall (0 when empty). The top quantile is the exact maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(i), h.max)
		}
	}
	return h.max
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// timelineStep is the width of one throughput bucket.
const timelineStep = 100 * time.Millisecond

// recovery finds when throughput came back after a disruption at `at`:
// the time from `at` to the start of the first window of `window` buckets
// that all reach frac of the rate before `at`. It returns the pre-disruption
// rate per bucket, the delay, and false if throughput never came back
// within the timeline. Buckets are counts per timelineStep; the last one,
// usually partial, is ignored.
func recovery(buckets []int64, at time.Duration, frac float64, window int) (pre float64, after time.Duration, ok bool) {
	if len(buckets) > 0 {
		buckets = buckets[:len(buckets)-1]
	}
	k := int(at / timelineStep) // the bucket in which it happened
	if k <= 0 || k > len(buckets) {
		return 0, 0, false
	}
	// The rate before: up to 2 s of whole buckets before k, skipping the
	// first half of the run (start-up) when the run is short.
	from := max(k-int(2*time.Second/timelineStep), k/2)
	var sum int64
	for _, c := range buckets[from:k] {
		sum += c
	}
	pre = float64(sum) / float64(k-from)
	threshold := frac * pre
	for j := k; j+window <= len(buckets); j++ {
		good := true
		for _, c := range buckets[j : j+window] {
			if float64(c) < threshold {
				good = false
				break
			}
		}
		if good {
			return pre, max(0, time.Duration(j)*timelineStep-at), true
		}
	}
	return pre, 0, false
}

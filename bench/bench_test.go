package bench

// Unit tests of the bench's arithmetic. Runs of the whole bench, against
// spawned clusters, are process tests: see test/bench_test.go.

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}} {
		got := h.quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff > 0.016 || diff < -0.016 {
			t.Errorf("q%v = %v, want %v within 1.6%%", c.q, got, c.want)
		}
	}
	if h.quantile(1) != 100*time.Millisecond || h.max != 100*time.Millisecond {
		t.Errorf("max %v, q1 %v, want 100ms", h.max, h.quantile(1))
	}
	var other histogram
	other.record(time.Second)
	h.merge(&other)
	if h.n != 100001 || h.max != time.Second {
		t.Errorf("after merge: n %d max %v", h.n, h.max)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Error("an empty histogram must give zeros")
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := time.Duration(0); v < time.Hour; v = v*9/8 + 1 {
		i := bucketOf(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("bucketOf(%v) = %d after %d", v, i, prev)
		}
		prev = i
		if mid := bucketValue(i); v > 0 && (float64(mid-v)/float64(v) > 1.0/64 || float64(v-mid)/float64(v) > 1.0/64) {
			t.Fatalf("bucket %d of %v stands for %v: more than 1/64 off", i, v, mid)
		}
	}
	if i := bucketOf(time.Duration(1<<63 - 1)); i != histBuckets-1 {
		t.Errorf("largest duration in bucket %d, want %d", i, histBuckets-1)
	}
}

func TestRecovery(t *testing.T) {
	// 100 per bucket, a kill at 2.05 s, 3 buckets at 10, then back.
	var b []int64
	for i := range 40 {
		switch {
		case i >= 20 && i < 23:
			b = append(b, 10)
		default:
			b = append(b, 100)
		}
	}
	pre, after, ok := recovery(b, 2050*time.Millisecond, 0.8, 5)
	if !ok || pre != 100 || after != 250*time.Millisecond {
		t.Errorf("recovery = %v, %v, %v; want 100, 250ms, true", pre, after, ok)
	}
	// Never back.
	for i := 20; i < len(b); i++ {
		b[i] = 10
	}
	if _, _, ok := recovery(b, 2050*time.Millisecond, 0.8, 5); ok {
		t.Error("throughput never came back, but recovery says it did")
	}
	// No dip at all: back at once.
	for i := range b {
		b[i] = 100
	}
	if _, after, ok := recovery(b, 2050*time.Millisecond, 0.8, 5); !ok || after != 0 {
		t.Errorf("no dip: recovery after %v, %v; want 0, true", after, ok)
	}
}

func TestParseNodeList(t *testing.T) {
	got := fmt.Sprint(parseNodeList("['a@h','b@h']"))
	if got != "[a@h b@h]" {
		t.Errorf("parseNodeList = %s", got)
	}
	if l := parseNodeList("[]"); len(l) != 0 {
		t.Errorf("parseNodeList([]) = %v", l)
	}
}

func TestSteady(t *testing.T) {
	flat := [][]int64{{100 << 20, 50 << 20}, {100<<20 + 1000, 50 << 20}}
	if !steady(flat) {
		t.Error("a few KB of change is steady")
	}
	growing := [][]int64{{100 << 20}, {110 << 20}}
	if steady(growing) {
		t.Error("10% growth is not steady")
	}
}

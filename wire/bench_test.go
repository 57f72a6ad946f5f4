package wire

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// Micro-benchmarks of the framing and encoding every reward goes through:
// a client's reward and its reply (or an error), and the replicate and ack
// between a primary and its keeper. Run with: go test -bench . -benchmem ./wire

var benchMsgs = []struct {
	name string
	m    Msg
}{
	{"reward", &Reward{Player: "player12345", Points: 1, ID: ReqID{Origin: 1767225600123456789, Seq: 123456}}},
	{"reward-reply", &RewardReply{Total: 123456}},
	{"replicate", &Replicate{Player: "player12345", Epoch: 3, Seq: 123456, Total: 123456, ID: ReqID{Origin: 1767225600123456789, Seq: 123456}}},
	{"ack", &Ack{}},
	{"error", &Error{Code: CodeNotOwner, Msg: "player12345 is owned by app_node2@host", Owner: NodeID{Name: "app_node2@host", Boot: 1767225600987654321}}},
}

// BenchmarkAppend encodes one frame into a FrameWriter's buffer (the
// writer goroutine's per-frame cost before the batched write).
func BenchmarkAppend(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			fw := NewFrameWriter(io.Discard)
			b.ReportAllocs()
			for b.Loop() {
				if err := fw.Append(7, bm.m); err != nil {
					b.Fatal(err)
				}
				if fw.Pending() > 64<<10 {
					_ = fw.Flush()
				}
			}
		})
	}
}

// BenchmarkAppendReflective is BenchmarkAppend through the reflective
// encoder every frame went through before fastcodec.go, for comparison.
func BenchmarkAppendReflective(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			var buf bytes.Buffer
			enc := newEncoder(&buf)
			b.ReportAllocs()
			for b.Loop() {
				if err := Validate(bm.m); err != nil {
					b.Fatal(err)
				}
				start := buf.Len()
				var hdr [headerLen + prefixLen]byte
				buf.Write(hdr[:])
				if err := enc.Encode(bm.m); err != nil {
					b.Fatal(err)
				}
				binary.BigEndian.PutUint32(buf.Bytes()[start:], uint32(buf.Len()-start-headerLen))
				if buf.Len() > 64<<10 {
					buf.Reset()
				}
			}
		})
	}
}

// BenchmarkDecode decodes one frame body, as a peer's FrameWriter encodes
// it, into a fresh message, as a connection's reader does for every frame:
// fast is Decode, reflective is msgpack.Unmarshal as every frame was
// decoded before fastcodec.go, for comparison.
func BenchmarkDecode(b *testing.B) {
	for _, codec := range []struct {
		name   string
		decode func(Kind, []byte) (Msg, error)
	}{{"fast", Decode}, {"reflective", decodeReflective}} {
		for _, bm := range benchMsgs {
			b.Run(codec.name+"/"+bm.name, func(b *testing.B) {
				body := reflectiveBody(b, bm.m)
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := codec.decode(bm.m.Kind(), body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFrameRoundtrip writes a batch of frames and reads them back, as
// one batched write and the reader on the other end of a connection do;
// reported per frame.
func BenchmarkFrameRoundtrip(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(map[int]string{1: "one-per-write", 64: "64-per-write"}[batch], func(b *testing.B) {
			var buf bytes.Buffer
			fw := NewFrameWriter(&buf)
			fr := NewFrameReader(&buf)
			m := benchMsgs[2].m // replicate
			b.ReportAllocs()
			for b.Loop() {
				for i := range batch {
					if err := fw.Append(uint64(i+1), m); err != nil {
						b.Fatal(err)
					}
				}
				if err := fw.Flush(); err != nil {
					b.Fatal(err)
				}
				for range batch {
					if _, _, err := fr.ReadMsg(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
	}
}

// BenchmarkRoundtrip is the in-memory network's path (MemNetwork): encode
// and decode one message without framing.
func BenchmarkRoundtrip(b *testing.B) {
	m := benchMsgs[2].m
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Roundtrip(m); err != nil {
			b.Fatal(err)
		}
	}
}

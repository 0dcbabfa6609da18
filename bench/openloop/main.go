// Command openloop is a fixed-rate (open-loop) HTTP/1.1 load generator for latency benchmarks.
//
// Requests are scheduled at start + i/rate whatever the server does, and each one's latency is
// measured from its scheduled time, not from when a connection became free: a slow response
// delays the requests behind it and that delay is counted, as wrk2 counts it (no coordinated
// omission). Requests go over a fixed set of keep-alive connections; a request whose time has
// come waits for a free one. The result is one JSON object on stdout: requests sent, errors,
// the achieved rate and latency percentiles in microseconds.
//
// usage: openloop -addr 127.0.0.1:8080 -path /small -rate 1000 -duration 10s [-conns 32]
//
//	[-warmup 1s] [-header "name: value"]...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Rate       float64 `json:"rate"`
	P50        float64 `json:"p50_us"`
	P90        float64 `json:"p90_us"`
	P99        float64 `json:"p99_us"`
	P999       float64 `json:"p999_us"`
	Max        float64 `json:"max_us"`
	Mean       float64 `json:"mean_us"`
	LateSends  int     `json:"late_sends"`
	FirstError string  `json:"first_error,omitempty"`
}

// readResponse reads one response with a Content-Length body (what the benchmark's backends
// send) and returns its status.
func readResponse(r *bufio.Reader) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(parts[1])
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if h == "\r\n" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "content-length") {
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	if length < 0 {
		return 0, errors.New("a response without Content-Length")
	}
	if _, err := r.Discard(length); err != nil {
		return 0, err
	}
	return status, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port to send to")
	path := flag.String("path", "/", "request target")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "measured time")
	warmup := flag.Duration("warmup", time.Second, "time at the same rate before measuring")
	conns := flag.Int("conns", 32, "keep-alive connections")
	var extra headers
	flag.Var(&extra, "header", "a request header (repeatable)")
	flag.Parse()

	request := []byte("GET " + *path + " HTTP/1.1\r\nHost: bench\r\n" +
		func() string {
			out := ""
			for _, h := range extra {
				out += h + "\r\n"
			}
			return out
		}() + "\r\n")

	total := int((*warmup + *duration).Seconds() * *rate)
	skip := int(warmup.Seconds() * *rate)
	type slot struct {
		i  int
		at time.Time
	}
	due := make(chan slot, total)
	latencies := make([]float64, total)
	var mu sync.Mutex
	errCount, late := 0, 0
	firstError := ""
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	for c := 0; c < *conns; c++ {
		conn, err := net.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "openloop: cannot connect to %s: %v\n", *addr, err)
			os.Exit(2)
		}
		wg.Add(1)
		go func(conn net.Conn) {
			defer wg.Done()
			defer conn.Close()
			reader := bufio.NewReaderSize(conn, 65536)
			for next := range due {
				i, at := next.i, next.at
				_, err := conn.Write(request)
				status := 0
				if err == nil {
					status, err = readResponse(reader)
				}
				took := time.Since(at)
				mu.Lock()
				if err != nil || status >= 400 {
					errCount++
					if firstError == "" {
						if err != nil {
							firstError = err.Error()
						} else {
							firstError = fmt.Sprintf("status %d", status)
						}
					}
					latencies[i] = -1
				} else {
					latencies[i] = float64(took.Nanoseconds()) / 1000.0
				}
				mu.Unlock()
				if err != nil { // a broken connection: open a new one
					conn.Close()
					if conn, err = net.Dial("tcp", *addr); err != nil {
						return
					}
					reader = bufio.NewReaderSize(conn, 65536)
				}
			}
		}(conn)
	}
	interval := time.Duration(float64(time.Second) / *rate)
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		} else if wait < -time.Millisecond {
			late++
		}
		due <- slot{i, at}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	measured := make([]float64, 0, total-skip)
	for _, v := range latencies[skip:] {
		if v >= 0 {
			measured = append(measured, v)
		}
	}
	sort.Float64s(measured)
	pct := func(p float64) float64 {
		if len(measured) == 0 {
			return 0
		}
		k := int(p * float64(len(measured)-1))
		return measured[k]
	}
	sum := 0.0
	for _, v := range measured {
		sum += v
	}
	res := result{
		Requests: total - skip, Errors: errCount, Rate: float64(total) / elapsed,
		P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), P999: pct(0.999),
		LateSends: late, FirstError: firstError,
	}
	if len(measured) > 0 {
		res.Max = measured[len(measured)-1]
		res.Mean = sum / float64(len(measured))
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// Command benchreport merges the rows that `make bench` collected (JSON lines
// written by internal/benchrow) into bench/results.json and prints them as a
// table, ours beside the peer, with the ratio and the goal.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"text/tabwriter"

	"coffre/internal/benchrow"
)

func main() {
	in := flag.String("in", "bench/rows.jsonl", "rows written by the bench tests")
	out := flag.String("out", "bench/results.json", "merged results")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v (did any bench test run?)\n", err)
		os.Exit(1)
	}
	defer f.Close()
	var rows []benchrow.Row
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r benchrow.Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: bad row %q: %v\n", sc.Text(), err)
			os.Exit(1)
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	b, _ := json.MarshalIndent(rows, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tours\tpeer\tpeer value\tunit\tratio\tgoal\tmet")
	for _, r := range rows {
		met := "no"
		if r.Ratio >= r.Goal {
			met = "yes"
		}
		if r.Goal == 0 {
			met = "-"
		}
		fmt.Fprintf(tw, "%s\t%.4g\t%s\t%.4g\t%s\t%.3f\t%.2f\t%s\n", r.Name, r.Ours, r.Peer, r.PeerValue, r.Unit, r.Ratio, r.Goal, met)
	}
	tw.Flush()
	fmt.Printf("\n%d figures written to %s (ratio > 1: Coffre did better than the peer)\n", len(rows), *out)
}

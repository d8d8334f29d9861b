#!/usr/bin/python3
"""Prints the kvserve vs llama.cpp table from compare_llamacpp.sh's results.jsonl."""
import json
import sys


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    machine = next(r for r in rows if r["kind"] == "machine")
    bw = next(r for r in rows if r["kind"] == "bandwidth")["result"]
    end = next((r for r in rows if r["kind"] == "end"), {})
    triad = bw["triad_GBps"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; load average "
          f"{machine['loadavg_start']} at start, {end.get('loadavg_end', '?')} at end")
    print(f"memory bandwidth ({bw['threads']} threads, best of {bw['reps']}): triad "
          f"{triad:.1f} GB/s, read {bw['read_GBps']:.1f} GB/s")
    print()
    header = "| file | figure | kvserve | llama.cpp | kvserve / llama.cpp | kvserve roofline |"
    print(header)
    print("|---|---|---|---|---|---|")
    for dt in dict.fromkeys(r["dtype"] for r in rows if "dtype" in r):
        kv = next(r["result"] for r in rows if r["kind"] == "kvserve" and r["dtype"] == dt)
        lb = next(r["result"] for r in rows if r["kind"] == "llama_bench" and r["dtype"] == dt)
        lbat = next(r["result"] for r in rows if r["kind"] == "llama_batch" and r["dtype"] == dt)
        wbytes = kv["weight_bytes_per_token"]
        roof = triad * 1e9 / wbytes  # tokens/s if every step only streamed the weights
        name = f"{dt} ({kv['weight_type']} weights)"

        def line(figure, ours, theirs, roofline=None):
            ratio = f"{ours / theirs:.2f}" if theirs else "-"
            rf = f"{ours / roofline:.0%} of {roofline:.1f}" if roofline else "-"
            print(f"| {name} | {figure} | {ours:.1f} | {theirs:.1f} | {ratio} | {rf} |")

        line(f"prefill {kv['prefill']['prompt_tokens']} tok/s", kv["prefill"]["tok_s"]["median"],
             lb["pp_tps_median"])
        line("decode batch 1 tok/s (bench --tg)",
             next(d["tok_s"]["median"] for d in kv["decode"] if d["concurrency"] == 1),
             lb["tg_tps_median"], roof)
        for d in kv["decode"]:
            c = d["concurrency"]
            theirs = next((t["gen_tps"] for t in lbat["table"] if t["seqs"] == c), 0)
            line(f"decode {c} seq lockstep, total tok/s", d["tok_s"]["median"], theirs,
                 roof * c if c == 1 else None)
        kv1 = next(d["tok_s"]["median"] for d in kv["decode"] if d["concurrency"] == 1)
        for d in kv["decode"]:
            if d["concurrency"] > 1:
                print(f"| {name} | {d['concurrency']} seq / own batch 1 | "
                      f"{d['tok_s']['median'] / kv1:.1f}x | | | |")
    print()
    print("Medians of the repetitions; roofline = triad bandwidth / weight bytes per token "
          "(weights streamed once per step).")


if __name__ == "__main__":
    main(sys.argv[1])

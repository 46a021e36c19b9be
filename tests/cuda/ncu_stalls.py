"""Stall ledger of one kernel from an Nsight Compute source page exported as CSV
(`ncu -i REPORT --page source --csv --print-source sass`): the SASS instructions that hold most of
the sampled warp stalls, each with its share and its largest stall reasons, then the kernel's
totals per reason. The column names differ between ncu versions, so they are matched by words.
    usage: python3 ncu_stalls.py SOURCE.csv [--top=N]"""
import csv
import io
import sys


def number(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return 0.0


def main():
    path = sys.argv[1]
    top = int(next((a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--top=")), 40))
    lines = open(path, errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if "Source" in l and "," in l), None)
    if start is None:
        sys.exit(f"no CSV header in {path}; first lines:\n" + "\n".join(lines[:5]))
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    cols = list(rows[0].keys()) if rows else []
    total = next((c for c in cols if "Sampling" in c and "All" in c), None) or \
        next((c for c in cols if "Sampling" in c), None)
    if total is None:
        sys.exit("no sampling column; columns: " + " | ".join(cols))
    # Reasons over all samples (ncu also lists each one again over the not-issued samples).
    reasons = [c for c in cols if c.lower().startswith("stall_") and "Not Issued" not in c]
    text = next((c for c in cols if c.strip() == "Source"), cols[1] if len(cols) > 1 else cols[0])
    addr = next((c for c in cols if "Address" in c), None)
    samples = [number(r[total]) for r in rows]
    whole = sum(samples) or 1.0
    print(f"{len(rows)} instructions, {whole:.0f} samples; reason columns: {len(reasons)}")
    order = sorted(range(len(rows)), key=lambda i: -samples[i])
    for i in order[:top]:
        r = rows[i]
        why = sorted(((number(r[c]), c) for c in reasons), reverse=True)[:3]
        why_s = ", ".join(f"{c} {v / samples[i]:.0%}" for v, c in why if v > 0)
        where = r[addr] if addr else str(i)
        print(f"{i:5d} {where:>8s} {samples[i] / whole:6.2%}  {r[text].strip()[:60]:60s} {why_s}")
    sums = sorted(((sum(number(r[c]) for r in rows), c) for c in reasons), reverse=True)
    print("totals: " + "; ".join(f"{c} {v / whole:.1%}" for v, c in sums[:12] if v > 0))


if __name__ == "__main__":
    main()

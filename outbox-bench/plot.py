"""Plots the burn-down tables printed by `outbox-bench pg-burndown` (and `sqlite`).

Usage: python3 outbox-bench/plot.py OUTPUT.png BENCH_OUTPUT.txt [MORE.txt ...]
Each input is the text a burn-down benchmark printed; every Markdown table row with
`keys | batch | (relays |) drain s | events/s (| load average)` becomes one bar.
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    title, found = None, []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("|") and title is None:
            title = line
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("|") or not cells[0] or cells[0].startswith("---") or cells[0] == "keys":
            continue
        if len(cells) == 6:  # keys | batch | relays | drain s | events/s | load average
            relays, rate = cells[2], cells[4]
        else:
            relays, rate = (cells[2] if len(cells) == 5 else "1"), cells[-1]
        label = f"keys {cells[0]}\nbatch {cells[1]}\n{relays} relay{'s' if relays != '1' else ''}"
        found.append((label, float(rate.replace(",", ""))))
    return title or path, found


def main():
    out, inputs = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(len(inputs), 1, figsize=(12, 4.5 * len(inputs)), squeeze=False)
    for axis, path in zip(axes[:, 0], inputs):
        title, data = rows(path)
        axis.bar([d[0] for d in data], [d[1] for d in data], color="#4878a8")
        axis.set_title(title)
        axis.set_ylabel("events/s")
        axis.tick_params(axis="x", labelsize=8)
        for i, (_, value) in enumerate(data):
            axis.text(i, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()

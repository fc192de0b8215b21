#!/usr/bin/env python3
"""SVG line charts from natter-loadtest --json output.

Usage: chart.py OUT.svg LABEL=FILE.jsonl [LABEL=FILE.jsonl ...]
       chart.py --rooms-ramp OUT.svg LABEL=FILE.jsonl [...]
The first plots p50 (dashed) and p99 (solid) of every `steady` run against its client
count; the second the p99 of every `rooms-ramp` step against its rate (messages/s), with
the 200 ms bound, one line per server (and per variant, e.g. fsync=always). One colour
per server. Standard library only; no network, no packages.
"""
import json
import math
import sys

COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700"]
W, H, L, R, T, B = 720, 420, 70, 170, 40, 50


def runs(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def rooms_ramp(out, inputs):
    series = {}
    for spec in inputs:
        label, path = spec.split("=", 1)
        for r in runs(path):
            if r.get("scenario") != "rooms-ramp":
                continue
            name = label + (f" {r['variant']}" if r.get("variant") else "")
            series[name] = [(s["rate"], max(s["p99_ms"], 0.1), s.get("pass")) for s in r.get("steps", [])]
    points = [p for s in series.values() for p in s]
    if not points:
        sys.exit("chart.py: no rooms-ramp runs in the inputs")
    xmin, xmax = min(p[0] for p in points), max(p[0] for p in points)
    top = 10 ** math.ceil(math.log10(max(max(p[1] for p in points), 300)))
    ymin = 0.1

    def px(x):
        return L + (math.log(x) - math.log(xmin)) / max(math.log(xmax) - math.log(xmin), 1e-9) * (W - L - R)

    def py(y):
        y = max(y, ymin)
        return T + (H - T - B) * (1 - (math.log10(y) - math.log10(ymin)) / (math.log10(top) - math.log10(ymin)))

    clients = next((r["clients"] for spec in inputs for r in runs(spec.split("=", 1)[1])
                    if r.get("scenario") == "rooms-ramp"), "?")
    svg = svg_head(f'<text x="{L}" y="22" font-size="14">rooms-ramp: p99 vs messages/s ({clients} clients, every one a sender)</text>',
                   ymin, top, py)
    y = py(200)
    svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1242f" stroke-dasharray="3,3"/>')
    svg.append(f'<text x="{W - R - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#d1242f">200 ms bound</text>')
    for x in sorted({p[0] for p in points}):
        svg.append(f'<text x="{px(x):.1f}" y="{H - B + 18}" text-anchor="middle">{x:.0f}</text>')
    svg.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 10}" text-anchor="middle">messages/s (all clients)</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(p[0]):.1f},{py(p[1]):.1f}" for p in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in pts:
            fill = colour if p[2] else "white"
            svg.append(f'<circle cx="{px(p[0]):.1f}" cy="{py(p[1]):.1f}" r="3.5" fill="{fill}" stroke="{colour}"/>')
        y = T + 10 + i * 20
        svg.append(f'<line x1="{W - R + 15}" x2="{W - R + 40}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        svg.append(f'<text x="{W - R + 46}" y="{y + 4}">{name}</text>')
    svg.append(f'<text x="{W - R + 15}" y="{H - B}">hollow: step failed</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


def svg_head(title, ymin, top, py):
    """The SVG's opening, its title, and the horizontal grid of a log latency axis."""
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>', title]
    d = ymin
    while d <= top:
        y = py(d)
        svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{d:g} ms</text>')
        d *= 10
    return svg


def main():
    if sys.argv[1] == "--rooms-ramp":
        return rooms_ramp(sys.argv[2], sys.argv[3:])
    out, inputs = sys.argv[1], sys.argv[2:]
    series = {}
    for spec in inputs:
        label, path = spec.split("=", 1)
        for r in runs(path):
            if r.get("scenario") != "steady" or not r.get("latency_ms"):
                continue
            series.setdefault(label, []).append((r["clients"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
    points = [p for s in series.values() for p in s]
    if not points:
        sys.exit("chart.py: no steady runs with latency in the inputs")
    xs = sorted({p[0] for p in points})
    ymax = max(max(p[1], p[2]) for p in points)
    top = 10 ** math.ceil(math.log10(max(ymax, 1)))
    ymin = 1.0

    def px(x):
        return L + (xs.index(x) + 0.5) * (W - L - R) / len(xs)

    def py(y):
        y = max(y, ymin)
        return T + (H - T - B) * (1 - (math.log10(y) - math.log10(ymin)) / (math.log10(top) - math.log10(ymin)))

    svg = svg_head(f'<text x="{W / 2 - 90}" y="22" font-size="14">Broadcast latency vs clients (steady)</text>',
                   ymin, top, py)
    for x in xs:
        svg.append(f'<text x="{px(x):.1f}" y="{H - B + 18}" text-anchor="middle">{x}</text>')
    svg.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 10}" text-anchor="middle">clients in the room</text>')
    for i, (label, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        pts.sort()
        for idx, dash in ((2, ""), (1, ' stroke-dasharray="5,4"')):
            path = " ".join(f"{px(p[0]):.1f},{py(p[idx]):.1f}" for p in pts)
            svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for p in pts:
                svg.append(f'<circle cx="{px(p[0]):.1f}" cy="{py(p[idx]):.1f}" r="3" fill="{colour}"/>')
        y = T + 10 + i * 34
        svg.append(f'<line x1="{W - R + 15}" x2="{W - R + 40}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        svg.append(f'<text x="{W - R + 46}" y="{y + 4}">{label} p99</text>')
        svg.append(f'<line x1="{W - R + 15}" x2="{W - R + 40}" y1="{y + 14}" y2="{y + 14}" stroke="{colour}" '
                   f'stroke-width="2" stroke-dasharray="5,4"/>')
        svg.append(f'<text x="{W - R + 46}" y="{y + 18}">{label} p50</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()

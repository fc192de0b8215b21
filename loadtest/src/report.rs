//! Everything the tester prints or writes: the human summary, the one JSON
//! object per run, the self-contained HTML/SVG report (hand-written SVG:
//! latency distribution and latency over time), and the side-by-side
//! comparison table built from several runs' JSON.

use crate::scenario::{deliveries_per_s, Outcome};
use crate::stats::TICK_NS;
use crate::stats::{ms, quantiles_ms};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// How the tester itself fared.
pub struct Tester {
    pub threads: usize,
    /// Clients deferred their ACKs to the delayed-ACK timer.
    pub delayed_acks: bool,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub worker_cpu_secs: f64,
    /// One-minute load average of the machine before and after the run.
    pub loadavg: (Option<f64>, Option<f64>),
    /// The tester's own VmRSS at the end of the run, KiB.
    pub rss_kib: Option<u64>,
}

impl Tester {
    /// The run's `tester` object; `fell_behind`: sends were dropped for being late.
    fn to_json(&self, fell_behind: bool) -> Value {
        json!({
            "threads": self.threads, "wall_secs": self.wall_secs, "cpu_secs": self.cpu_secs,
            "worker_load": self.load(), "bottleneck": self.bottleneck() || fell_behind,
            "loadavg_before": self.loadavg.0, "loadavg_after": self.loadavg.1,
            "rss_kib": self.rss_kib, "delayed_acks": self.delayed_acks,
        })
    }

    /// Share of its worker threads' capacity the tester used.
    pub fn load(&self) -> f64 {
        self.worker_cpu_secs / (self.wall_secs * self.threads as f64).max(1e-9)
    }
    pub fn bottleneck(&self) -> bool {
        self.load() >= 0.9
    }
}

/// The run as one JSON object.
pub fn to_json(o: &Outcome, label: &str, variant: Option<&str>, tester: &Tester) -> Value {
    let s = &o.stats;
    let mut j = json!({
        "label": label,
        "scenario": o.scenario.name(),
        "variant": variant,
        "clients": o.clients,
        "headline": o.headline,
        "connected": s.connected,
        "connect_attempts": s.connect_attempts,
        "connect_failed": s.connect_failed,
        "connect_secs": o.connect_secs,
        "connect_ms": quantiles_ms(&s.connect_us),
        "receivers": o.receivers,
        "sent": s.sent,
        "send_skipped": s.send_skipped,
        "send_behind": s.send_behind,
        "expected": o.expected,
        "delivered": s.unique(),
        "lost": o.lost(),
        "duplicated": s.duplicates,
        "out_of_order": s.late,
        "foreign": s.foreign,
        "stale": s.stale,
        "churner_deliveries": s.uncounted,
        "misrouted": s.misrouted,
        "witness_probes_heard": s.witness_probes,
        "rooms": o.rooms.as_ref().map(|r| r.to_json()),
        "witness": o.witness.as_ref().map(|w| json!({
            "latency_ms": quantiles_ms(&w.latency_us), "sent": w.sent, "delivered": w.unique(),
            "connected": w.connected, "connect_failed": w.connect_failed, "dropped": w.dropped,
            "server_closes": w.server_closes,
        })),
        "server_kernel": o.kernel,
        "scrollback": o.scrollback,
        "latency_ms": quantiles_ms(&s.latency_us),
        "deliveries_per_s": deliveries_per_s(s, o.window).round(),
        "server_errors": s.server_errors,
        "server_closes": s.server_closes,
        "dropped": s.dropped,
        "violations": s.violations,
        "pings": s.pings,
        "not_json": s.not_json,
        "binary": s.binary,
        "server_rss_kib": o.rss.map(|(b, a)| json!({"before": b, "after": a})),
        "steps": o.steps,
        "tester": tester.to_json(s.send_behind > 0),
        "notes": o.notes,
    });
    // Apart: one more key in the macro above passes its recursion limit.
    j["posts"] = s.posts.into();
    j["posts_failed"] = s.posts_failed.into();
    j
}

fn tallies(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x:.2}"),
        None => v.to_string(),
    }
}

/// The human summary, from the JSON so both always agree.
pub fn summary(j: &Value) -> String {
    let mut out = String::new();
    let q = |k: &str, p: &str| j[k][p].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    let _ = writeln!(
        out,
        "== {} against {} ({} clients) ==",
        j["scenario"].as_str().unwrap_or(""),
        j["label"].as_str().unwrap_or(""),
        j["clients"]
    );
    let _ = writeln!(
        out,
        "connected     {} of {} attempts in {:.2} s; connect ms p50 {} p99 {}; failed: {}",
        j["connected"],
        j["connect_attempts"],
        j["connect_secs"].as_f64().unwrap_or(0.0),
        q("connect_ms", "p50"),
        q("connect_ms", "p99"),
        tallies(&j["connect_failed"])
    );
    let _ = writeln!(
        out,
        "messages      sent {} (skipped {}, tester behind by {}) to {} receivers; expected {} deliveries",
        j["sent"], j["send_skipped"], j["send_behind"], j["receivers"], j["expected"]
    );
    let _ = writeln!(
        out,
        "deliveries    delivered {}  lost {}  duplicated {}  out of order {}  ({} /s); stale {}, churners got {}",
        j["delivered"],
        j["lost"],
        j["duplicated"],
        j["out_of_order"],
        num(&j["deliveries_per_s"]),
        j["stale"],
        j["churner_deliveries"],
    );
    let _ = writeln!(
        out,
        "latency ms    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        q("latency_ms", "p50"),
        q("latency_ms", "p90"),
        q("latency_ms", "p99"),
        q("latency_ms", "p99_9"),
        q("latency_ms", "max")
    );
    let w = &j["witness"]["latency_ms"];
    if w.is_object() {
        let _ = writeln!(
            out,
            "witness ms    p50 {}  p99 {}  max {}  ({} round trips on its own thread; fleet p50 {})",
            num(&w["p50"]),
            num(&w["p99"]),
            num(&w["max"]),
            w["count"],
            q("latency_ms", "p50"),
        );
    }
    if let Some(r) = j["rooms"].as_object() {
        let _ = writeln!(
            out,
            "rooms         {} rooms lost deliveries ({} in all), {} had duplicates, {} out of order; misrouted {}; worst {}",
            r["rooms_with_loss"], r["lost"], r["rooms_with_duplicates"], r["rooms_out_of_order"], j["misrouted"], r["worst"]
        );
    }
    out.push_str(&crate::scrollback::summary(j).unwrap_or_default());
    if let Some(k) = j["server_kernel"].as_object() {
        let _ = writeln!(
            out,
            "memory KiB/conn RSS {}  kernel {} (KernelStack {}, Slab {}; {})  total {}",
            num(&j["headline"]["kib_per_conn"]),
            num(&k["kib_per_conn"]),
            num(&k["kernel_stack_kib_per_conn"]),
            num(&k["slab_kib_per_conn"]),
            k["source"].as_str().unwrap_or(""),
            num(&j["headline"]["total_kib_per_conn"]),
        );
    }
    let _ = writeln!(
        out,
        "server said   errors: {}; closes: {}; dropped: {}; violations: {}; pings {}",
        tallies(&j["server_errors"]),
        tallies(&j["server_closes"]),
        tallies(&j["dropped"]),
        tallies(&j["violations"]),
        j["pings"]
    );
    if j["transport"] == "sse" {
        let _ = writeln!(out, "fallback      POST /send answered 2xx {}, failed {}", j["posts"], j["posts_failed"]);
    }
    if let Some(r) = j["server_rss_kib"].as_object() {
        let _ = writeln!(out, "server RSS    {} KiB before, {} KiB after", r["before"], r["after"]);
    }
    for step in j["steps"].as_array().into_iter().flatten() {
        let row: Vec<String> = step.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", num(v))).collect();
        let _ = writeln!(out, "step          {}", row.join(" "));
    }
    let h: Vec<String> =
        j["headline"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", num(v))).collect();
    let _ = writeln!(out, "result        {}", h.join("  "));
    let t = &j["tester"];
    let _ = writeln!(
        out,
        "tester        {} thread(s), ACKs {}, {:.1} s wall, {:.1} s CPU, workers at {:.0}% of capacity; machine load {} → {}",
        t["threads"],
        if t["delayed_acks"] == json!(true) { "delayed" } else { "immediate" },
        t["wall_secs"].as_f64().unwrap_or(0.0),
        t["cpu_secs"].as_f64().unwrap_or(0.0),
        100.0 * t["worker_load"].as_f64().unwrap_or(0.0),
        t["loadavg_before"],
        t["loadavg_after"],
    );
    if t["bottleneck"] == json!(true) {
        let _ = writeln!(out, "WARNING       the tester was the bottleneck (≥ 90% of its threads' CPU): add --threads or trust these numbers less");
    }
    for n in j["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "note          {}", n.as_str().unwrap_or(""));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One line of a chart: name, colour, points in data units.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart with a linear y axis from 0.
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: Vec<Series<'a>>,
    x_ticks: Vec<(f64, String)>,
}

impl Chart<'_> {
    fn svg(&self, y_offset: f64) -> String {
        let (w, h, left, top, bottom) = (760.0, 300.0, 70.0, 30.0, 40.0);
        let pts = self.series.iter().flat_map(|s| s.2.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let y1 = nice_ceiling(y1.max(0.001));
        let (pw, ph) = (w - left - 20.0, h - top - bottom);
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| y_offset + top + ph - y / y1 * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<g font-family="sans-serif" font-size="11"><text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"##,
            y_offset + 18.0,
            esc(self.title)
        );
        let _ = write!(
            s,
            r##"<rect x="{left}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
            y_offset + top
        );
        for k in 0..=4 {
            let y = y1 * k as f64 / 4.0;
            let (right, yy, lx, ty, label) = (left + pw, sy(y), left - 4.0, sy(y) + 4.0, fmt_num(y));
            let _ = write!(
                s,
                r##"<line x1="{left}" x2="{right}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{lx}" y="{ty}" text-anchor="end">{label}</text>"##
            );
        }
        for (x, label) in &self.x_ticks {
            if *x >= x0 && *x <= x1 {
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
                    sx(*x),
                    y_offset + top + ph + 14.0,
                    esc(label)
                );
            }
        }
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
            left + pw / 2.0,
            y_offset + h - 6.0,
            esc(self.x_label)
        );
        let _ = write!(
            s,
            r##"<text transform="translate(14,{}) rotate(-90)" text-anchor="middle">{}</text>"##,
            y_offset + top + ph / 2.0,
            esc(self.y_label)
        );
        for (i, (name, color, points)) in self.series.iter().enumerate() {
            let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"##,
                path.join(" ")
            );
            let lx = left + 10.0 + 110.0 * i as f64;
            let _ = write!(
                s,
                r##"<rect x="{lx}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"##,
                y_offset + top + 6.0,
                lx + 14.0,
                y_offset + top + 15.0,
                esc(name)
            );
        }
        s.push_str("</g>");
        s
    }
}

fn nice_ceiling(y: f64) -> f64 {
    let p = 10f64.powf(y.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|&v| v >= y).unwrap_or(10.0 * p)
}

fn fmt_num(y: f64) -> String {
    if y >= 100.0 || y == 0.0 {
        format!("{y:.0}")
    } else if y >= 1.0 {
        format!("{y:.1}")
    } else {
        format!("{y:.3}")
    }
}

/// Latency distribution: x is the percentile on the usual HDR scale
/// (log of 1/(1-q)), y the latency in ms.
fn distribution_chart(h: &Histogram<u64>) -> Chart<'static> {
    let mut points = Vec::new();
    if !h.is_empty() {
        for k in 0..=120 {
            let x = k as f64 / 20.0; // 0 .. 6 → q up to 0.999999
            let q = 1.0 - 10f64.powf(-x);
            points.push((x, ms(h.value_at_quantile(q))));
        }
    }
    let ticks =
        [("0%", 0.0), ("90%", 1.0), ("99%", 2.0), ("99.9%", 3.0), ("99.99%", 4.0), ("99.999%", 5.0), ("max", 6.0)];
    Chart {
        title: "Latency distribution (send → arrival)",
        x_label: "percentile",
        y_label: "latency, ms",
        series: vec![("latency", "#1f77b4", points)],
        x_ticks: ticks.iter().map(|(l, x)| (*x, l.to_string())).collect(),
    }
}

/// p50, p99 and max of latency per tick over the run.
fn timeline_chart(o: &Outcome) -> Chart<'static> {
    let first = o.stats.timeline.keys().next().copied().unwrap_or(0);
    let secs = |tick: u32| f64::from(tick - first) * TICK_NS as f64 / 1e9;
    let series = |q: Option<f64>| -> Vec<(f64, f64)> {
        o.stats.timeline.iter().map(|(t, h)| (secs(*t), ms(q.map_or(h.max(), |q| h.value_at_quantile(q))))).collect()
    };
    let span = secs(o.stats.timeline.keys().last().copied().unwrap_or(first)).ceil() as u32;
    let step = (span / 10).max(1);
    Chart {
        title: "Latency over time (per quarter second of arrival)",
        x_label: "seconds",
        y_label: "latency, ms",
        series: vec![
            ("p50", "#2ca02c", series(Some(0.5))),
            ("p99", "#ff7f0e", series(Some(0.99))),
            ("max", "#d62728", series(None)),
        ],
        x_ticks: (0..=span).step_by(step as usize).map(|s| (f64::from(s), s.to_string())).collect(),
    }
}

/// Both charts as one standalone SVG document.
pub fn svg(o: &Outcome) -> String {
    let mut s = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="620" viewBox="0 0 760 620"><rect width="760" height="620" fill="white"/>"##,
    );
    s.push_str(&distribution_chart(&o.stats.latency_us).svg(0.0));
    s.push_str(&timeline_chart(o).svg(310.0));
    s.push_str("</svg>");
    s
}

/// A ramp's steps: fleet p50 and p99 and the witness's p99 at each rate
/// (x is the step, labelled with its rate, since rates grow geometrically).
fn ramp_chart(steps: &[Value]) -> Chart<'static> {
    let series = |key: &str| -> Vec<(f64, f64)> {
        steps.iter().enumerate().filter_map(|(i, s)| Some((i as f64, s[key].as_f64()?))).collect()
    };
    Chart {
        title: "Ramp: latency at each rate (p99 bound 200 ms)",
        x_label: "messages per second, all senders",
        y_label: "latency, ms",
        series: vec![
            ("p50", "#2ca02c", series("p50_ms")),
            ("p99", "#ff7f0e", series("p99_ms")),
            ("witness p99", "#9467bd", series("witness_p99_ms")),
        ],
        x_ticks: steps
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, format!("{:.0}", s["rate"].as_f64().unwrap_or(0.0))))
            .collect(),
    }
}

/// The ramp chart as its own SVG document, or nothing for runs without
/// rate steps.
fn ramp_svg(j: &Value) -> String {
    let steps = j["steps"].as_array().map_or(&[][..], Vec::as_slice);
    if steps.is_empty() || steps[0].get("rate").is_none() {
        return String::new();
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="310" viewBox="0 0 760 310"><rect width="760" height="310" fill="white"/>{}</svg>"##,
        ramp_chart(steps).svg(0.0)
    )
}

/// A self-contained HTML page: the summary, the charts, the steps.
pub fn html(o: &Outcome, j: &Value) -> String {
    let mut steps = String::new();
    if let Some(rows) = j["steps"].as_array().filter(|r| !r.is_empty()) {
        let keys: Vec<&String> = rows[0].as_object().map(|m| m.keys().collect()).unwrap_or_default();
        steps.push_str("<h2>Steps</h2><table><tr>");
        for k in &keys {
            let _ = write!(steps, "<th>{}</th>", esc(k));
        }
        steps.push_str("</tr>");
        for r in rows {
            steps.push_str("<tr>");
            for k in &keys {
                let _ = write!(steps, "<td>{}</td>", esc(&num(&r[k.as_str()])));
            }
            steps.push_str("</tr>");
        }
        steps.push_str("</table>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>natter-loadtest: {scenario} against {label}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}table{{border-collapse:collapse;display:block;overflow-x:auto}}</style></head><body>\
         <h1>{scenario} against {label}</h1><pre>{summary}</pre>{svg}{steps}\
         <h2>Raw result</h2><pre>{raw}</pre></body></html>\n",
        scenario = esc(j["scenario"].as_str().unwrap_or("")),
        label = esc(j["label"].as_str().unwrap_or("")),
        summary = esc(&summary(j)),
        svg = ramp_svg(j) + &svg(o),
        raw = esc(&serde_json::to_string_pretty(j).unwrap_or_default()),
    )
}

/// Side-by-side table from several runs: rows are (scenario, clients,
/// headline metric), columns the labels in the order given, then the
/// ratio of the first label to each of `ratio_to` (all others if empty),
/// then each `(numerator, denominator)` of `ratios`. With `rows_of_first`, only
/// the rows the first label has a value in. A row some label ran more than once
/// (the shootout's rounds) becomes three: its `_min`, `_median` and `_max`, each
/// label's spread (a label that ran it once shows that value in all three).
pub fn compare(
    runs: &[(String, Vec<Value>)],
    ratio_to: &[String],
    ratios: &[(String, String)],
    rows_of_first: bool,
) -> String {
    let labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    let mut pairs: Vec<(&str, &str)> = labels
        .iter()
        .skip(1)
        .filter(|l| ratio_to.is_empty() || ratio_to.iter().any(|r| r == *l))
        .map(|l| (labels[0], *l))
        .collect();
    pairs.extend(ratios.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    // (scenario, clients, metric): one row of the table.
    type Key = (String, u64, String);
    let mut rows: BTreeMap<Key, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut order: Vec<Key> = Vec::new();
    for (label, values) in runs {
        for v in values {
            let mut scenario = v["scenario"].as_str().unwrap_or("?").to_string();
            if let Some(variant) = v["variant"].as_str() {
                scenario = format!("{scenario} {variant}");
            }
            let clients = v["clients"].as_u64().unwrap_or(0);
            for (metric, x) in v["headline"].as_object().into_iter().flatten() {
                let Some(x) = x.as_f64() else { continue };
                let key = (scenario.clone(), clients, metric.clone());
                if !rows.contains_key(&key) {
                    order.push(key.clone());
                }
                rows.entry(key).or_default().entry(label.as_str()).or_default().push(x);
            }
        }
    }
    if rows_of_first {
        order.retain(|key| rows[key].contains_key(labels[0]));
    }
    // Rounds: one row per statistic of the spread.
    let mut table: Vec<(Key, BTreeMap<&str, f64>)> = Vec::new();
    for key in &order {
        let vals = &rows[key];
        if vals.values().all(|v| v.len() == 1) {
            table.push((key.clone(), vals.iter().map(|(l, v)| (*l, v[0])).collect()));
            continue;
        }
        for (stat, pick) in [("min", 0.0), ("median", 0.5), ("max", 1.0)] {
            let cells = vals
                .iter()
                .map(|(l, v)| {
                    let mut v = v.clone();
                    v.sort_by(f64::total_cmp);
                    (*l, v[((v.len() - 1) as f64 * pick).round() as usize])
                })
                .collect();
            table.push(((key.0.clone(), key.1, format!("{}_{stat}", key.2)), cells));
        }
    }
    let mut out = String::new();
    let _ = write!(out, "{:<24} {:>7} {:<22}", "scenario", "clients", "metric");
    for l in &labels {
        let _ = write!(out, " {:>12}", l);
    }
    for (a, b) in &pairs {
        let _ = write!(out, " {:>14}", format!("{a}/{b}"));
    }
    out.push('\n');
    for (key, vals) in &table {
        let _ = write!(out, "{:<24} {:>7} {:<22}", key.0, key.1, key.2);
        for l in &labels {
            let cell = vals.get(l).map_or("-".into(), |x| fmt_num(*x));
            let _ = write!(out, " {:>12}", cell);
        }
        for (a, b) in &pairs {
            let ratio = match (vals.get(a), vals.get(b)) {
                (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let _ = write!(out, " {:>14}", ratio);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_lines_up_labels_and_ratios() {
        let a = vec![json!({"scenario":"steady","clients":1000,"headline":{"p99_ms":10.0,"lost":0}})];
        let b = vec![json!({"scenario":"steady","clients":1000,"headline":{"p99_ms":5.0,"lost":0}})];
        let t = compare(&[("natter".into(), a.clone()), ("node".into(), b.clone())], &[], &[], false);
        let line = t.lines().find(|l| l.contains("p99_ms")).unwrap();
        assert!(line.contains("10.0") && line.contains("5.0") && line.trim_end().ends_with("2.00"), "{line}");
        assert!(t.lines().find(|l| l.contains("lost")).unwrap().trim_end().ends_with('-'));
        let c = vec![json!({"scenario":"rooms","clients":10,"variant":"fsync=always","headline":{"p99_ms":4.0}})];
        let runs = [("natter".into(), a.clone()), ("node".into(), b), ("tokio".into(), c.clone())];
        let t = compare(&runs, &["tokio".into()], &[], false);
        assert!(t.lines().next().unwrap().contains("natter/tokio") && !t.contains("natter/node"), "{t}");
        assert!(t.contains("rooms fsync=always"), "{t}");
        // A pair of the caller's choosing: node's p99 over natter's.
        let t = compare(&runs, &["tokio".into()], &[("node".into(), "natter".into())], false);
        assert!(t.lines().next().unwrap().trim_end().ends_with("node/natter"), "{t}");
        let line = t.lines().find(|l| l.contains("p99_ms")).unwrap();
        assert!(line.trim_end().ends_with("0.50"), "{line}");
        let sse = vec![json!({"scenario":"steady","clients":1000,"headline":{"p99_ms":15.0}})];
        let t = compare(&[("natter-sse".into(), sse), ("natter".into(), [a, c].concat())], &[], &[], true);
        assert_eq!(t.lines().count(), 2, "the header and natter-sse's one row: {t}");
        assert!(t.lines().nth(1).unwrap().trim_end().ends_with("1.50"), "{t}");
    }

    #[test]
    fn a_row_run_in_rounds_shows_its_spread() {
        let round = |n: u64| json!({"scenario":"shootout","clients":19000,"headline":{"max_clients_passing":n}});
        let natter = vec![round(11000), round(19000), round(17000)];
        let ceiling = vec![round(19000)];
        let t = compare(&[("natter".into(), natter), ("ceiling".into(), ceiling)], &[], &[], false);
        let row = |stat: &str| {
            let line = t.lines().find(|l| l.contains(&format!("max_clients_passing_{stat}"))).unwrap();
            line.split_whitespace().skip(3).map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(row("min"), ["11000", "19000", "0.58"], "{t}");
        assert_eq!(row("median"), ["17000", "19000", "0.89"], "{t}");
        assert_eq!(row("max"), ["19000", "19000", "1.00"], "{t}");
        assert_eq!(t.lines().count(), 4, "{t}");
    }

    #[test]
    fn ramp_steps_make_a_chart() {
        let j = json!({"steps":[{"rate":500.0,"p50_ms":1.0,"p99_ms":3.0,"witness_p99_ms":0.5},{"rate":1000.0,"p50_ms":2.0,"p99_ms":250.0}]});
        let svg = ramp_svg(&j);
        assert!(svg.contains("<polyline") && svg.contains(">1000<") && svg.contains("witness p99"), "{svg}");
        assert_eq!(ramp_svg(&json!({"steps":[{"clients":10}]})), "");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}

/**
 * The run's report: one self-contained HTML file (inline CSS and SVG, no
 * script, no external URL) with, for requests, input and output tokens, what
 * the provider counted in the trailing minute against the limit and what the
 * run used against what the quota allowed since the start; the limiter's queue
 * by priority, 429s, 529s and retries over time, documents done, and the
 * summary table; when the quota was the bottleneck, the summary's sentence
 * saying so stands out under the headline. Pure functions.
 */
import { allowance, type Dimension, limitOf, type Limits, type Sample, type Summary } from "./Summary.js"

/** What the report is made of. */
export interface ReportInput {
  readonly title: string
  /** ISO time, shown in the header. */
  readonly generatedAt: string
  readonly model: string
  readonly limits: Limits
  readonly samples: ReadonlyArray<Sample>
  readonly summary: Summary
  /** Plain sentences shown under the summary. */
  readonly notes: ReadonlyArray<string>
}

/** Escapes text for HTML. */
export const escapeHtml = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;")

const round = (n: number): string => (Number.isFinite(n) ? String(Math.round(n * 10) / 10) : "0")
/** A count with thousands separators; a non-finite input prints as "n/a", never as `NaN`. */
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a")
const fixed = (n: number, digits: number): string => (Number.isFinite(n) ? n.toFixed(digits) : "n/a")
/** The largest of `values` and `floor` (no spread, so a long run cannot overflow the call stack). */
const largest = (values: ReadonlyArray<number>, floor: number): number =>
  values.reduce((max, v) => (Number.isFinite(v) && v > max ? v : max), floor)

/** A chart's drawing area and the ranges it maps. */
export interface Scale {
  readonly width: number
  readonly height: number
  readonly left: number
  readonly right: number
  readonly top: number
  readonly bottom: number
  readonly xMax: number
  readonly yMax: number
}

/** The scale of a chart of `xMax` by `yMax` (each at least 1, so nothing divides by zero). */
export const scale = (xMax: number, yMax: number): Scale => ({
  width: 520,
  height: 240,
  left: 64,
  right: 16,
  top: 28,
  bottom: 36,
  xMax: Number.isFinite(xMax) && xMax > 0 ? xMax : 1,
  yMax: Number.isFinite(yMax) && yMax > 0 ? yMax : 1
})

/** The SVG x coordinate of data value `x`. */
export const xOf = (s: Scale, x: number): number => s.left + (x / s.xMax) * (s.width - s.left - s.right)
/** The SVG y coordinate of data value `y` (0 at the bottom of the drawing area). */
export const yOf = (s: Scale, y: number): number => s.height - s.bottom - (y / s.yMax) * (s.height - s.top - s.bottom)

/** The `points` attribute of a polyline through `(x, y)` pairs. */
export const polyline = (points: ReadonlyArray<readonly [number, number]>, s: Scale): string =>
  points.map(([x, y]) => `${round(xOf(s, x))},${round(yOf(s, y))}`).join(" ")

/**
 * About five round tick values from 0 to `max`. With `integer`, the step is at
 * least 1 (counts such as queue depth have no half requests).
 *
 * @example
 * ticks(2_200) // [0, 500, 1000, 1500, 2000]
 * ticks(1.1, true) // [0, 1]
 */
export const ticks = (max: number, integer = false): ReadonlyArray<number> => {
  if (!(max > 0) || !Number.isFinite(max)) return [0]
  const raw = max / 5
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)))
  const step = [1, 2, 2.5, 5, 10]
    .map((m) => m * magnitude)
    .filter((candidate) => !integer || (candidate >= 1 && Number.isInteger(candidate)))
    .find((candidate) => candidate >= raw) ?? (integer ? Math.max(1, Math.ceil(raw)) : raw)
  const out: Array<number> = []
  // Multiplying (not adding) keeps 0.1 steps from drifting to 0.30000000000000004.
  for (let i = 0; i * step <= max + step * 1e-9; i++) out.push(Number((i * step).toPrecision(12)))
  return out
}

/** A tick label: 2.5k, 4M, 0.25 (two decimals below 1,000 so that 0.25 is not labelled 0.3). */
const short = (n: number): string =>
  n >= 1_000_000
    ? `${Math.round(n / 10_000) / 100}M`
    : n >= 1_000
    ? `${Math.round(n / 10) / 100}k`
    : String(Math.round(n * 100) / 100)

/**
 * What the provider counted of `dimension` in the trailing quota minute at
 * each sample: its count minus the count one quota minute earlier (linearly
 * interpolated between the samples around that instant; 0 before the start,
 * so during the first minute it is what was counted since the start — the
 * provider's bucket starts full). Samples are ordered by time.
 *
 * @example
 * // 600 input tokens in the first instant, then 10 a second (a sample a second from 0 s, a real-time minute):
 * trailingMinute(samples, "inputTokens") // [600, 610, …, 1_190 at 59 s, then 600 from 60 s on]
 */
export const trailingMinute = (samples: ReadonlyArray<Sample>, dimension: Dimension): ReadonlyArray<number> => {
  // The count at quota minute `at`, found from the sample `from` on (the instants only move forward).
  let from = 0
  const countAt = (at: number): number => {
    if (samples.length === 0 || at <= 0) return 0
    while (from + 1 < samples.length && samples[from + 1]!.quotaMinutes <= at) from++
    const before = samples[from]!
    const after = samples[from + 1]
    if (before.quotaMinutes > at) {
      // Before the first sample: between the start (0 counted) and it.
      return before.quotaMinutes > 0 ? (before[dimension] * at) / before.quotaMinutes : 0
    }
    if (after === undefined || after.quotaMinutes <= before.quotaMinutes) return before[dimension]
    const share = (at - before.quotaMinutes) / (after.quotaMinutes - before.quotaMinutes)
    return before[dimension] + (after[dimension] - before[dimension]) * share
  }
  return samples.map((sample) => sample[dimension] - countAt(sample.quotaMinutes - 1))
}

/** One colour per series, the same in every chart, and no two series alike. */
export const colours = {
  value: "#2563eb",
  limit: "#dc2626",
  interactive: "#16a34a",
  normal: "#ca8a04",
  batch: "#0891b2",
  inFlight: "#64748b",
  http429: "#be185d",
  http529: "#9333ea",
  retries: "#ea580c",
  done: "#0f766e"
} as const
type SeriesName = keyof typeof colours

interface Series {
  readonly name: SeriesName
  readonly label: string
  readonly points: ReadonlyArray<readonly [number, number]>
  readonly dashed?: boolean
}

/** How a chart draws its y axis: the least top of its range, and whether its values are counts. */
interface Axis {
  readonly yFloor?: number
  readonly integer?: boolean
}

/** One chart: axes, ticks, series and legend, as inline SVG. The y range is the largest value (or `yFloor`) × 1.1. */
const chart = (
  id: string,
  title: string,
  unit: "s" | "min",
  series: ReadonlyArray<Series>,
  axis: Axis = {}
): string => {
  const xs = series.flatMap((line) => line.points.map(([x]) => x))
  const ys = series.flatMap((line) => line.points.map(([, y]) => y))
  const s = scale(largest(xs, 0), largest(ys, axis.yFloor ?? 0) * 1.1)
  const xTicks = ticks(s.xMax)
  const yTicks = ticks(s.yMax, axis.integer === true)
  const grid = [
    ...yTicks.map((v) =>
      `<line x1="${s.left}" x2="${s.width - s.right}" y1="${round(yOf(s, v))}" y2="${
        round(yOf(s, v))
      }" class="grid"/>` +
      `<text x="${s.left - 6}" y="${round(yOf(s, v) + 4)}" text-anchor="end">${short(v)}</text>`
    ),
    ...xTicks.map((v) =>
      `<text x="${round(xOf(s, v))}" y="${s.height - s.bottom + 16}" text-anchor="middle">${short(v)}</text>`
    )
  ].join("")
  const lines = series.map((line) =>
    line.points.length === 1
      ? `<circle data-series="${line.name}" cx="${round(xOf(s, line.points[0]![0]))}" cy="${
        round(yOf(s, line.points[0]![1]))
      }" r="3" fill="${colours[line.name]}"/>`
      : `<polyline data-series="${line.name}" fill="none" stroke="${colours[line.name]}" stroke-width="2"${
        line.dashed === true ? ` stroke-dasharray="6 4"` : ""
      } points="${polyline(line.points, s)}"/>`
  ).join("")
  const legend = series.map((line, i) =>
    `<g transform="translate(${s.left + 8 + i * 96},${s.top - 12})"><rect width="10" height="10" y="-9" fill="${
      colours[line.name]
    }"/><text x="14">${escapeHtml(line.label)}</text></g>`
  ).join("")
  return `<figure><figcaption>${escapeHtml(title)}</figcaption>` +
    `<svg data-chart="${id}" viewBox="0 0 ${s.width} ${s.height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${
      escapeHtml(title)
    }">` +
    `<title>${escapeHtml(title)}</title>` +
    `<g class="axis">${grid}<line x1="${s.left}" x2="${s.left}" y1="${s.top}" y2="${s.height - s.bottom}"/>` +
    `<line x1="${s.left}" x2="${s.width - s.right}" y1="${s.height - s.bottom}" y2="${s.height - s.bottom}"/>` +
    `<text x="${s.width - s.right}" y="${s.height - 4}" text-anchor="end">${
      unit === "s" ? "seconds" : "minutes"
    }</text></g>` +
    `${lines}${legend}</svg></figure>`
}

/**
 * The report as one HTML document: inline CSS, inline SVG charts, no script and
 * no URL but the SVG namespace. Text from `input` is escaped. With no samples, a
 * sentence stands in for the charts.
 */
export const render = (input: ReportInput): string => {
  const { limits, samples, summary } = input
  // The bottleneck sentence stands out under the headline; it is not repeated among the notes.
  const notes = input.notes.filter((note) => note !== summary.bottleneck)
  const lastSecond = samples.at(-1)?.atSeconds ?? 0
  const unit = lastSecond > 300 ? "min" : "s"
  const x = (sample: Sample) => (unit === "min" ? sample.atSeconds / 60 : sample.atSeconds)
  const along = (f: (sample: Sample) => number) => samples.map((sample) => [x(sample), f(sample)] as const)
  // Across the whole x axis, at least one unit wide, so a run with one sample at 0 s still shows its limit.
  const lastX = largest(samples.map(x), 1)
  const limitLine = (limit: number) => [[0, limit] as const, [lastX, limit] as const]
  const names: Record<Dimension, string> = {
    requests: "Requests",
    inputTokens: "Input tokens",
    outputTokens: "Output tokens"
  }
  // Per dimension, side by side: the trailing minute against the limit, and the use against the allowance.
  const quota = (dimension: Dimension) => {
    const limit = limitOf(limits, dimension)
    const counted = trailingMinute(samples, dimension)
    return [
      chart(dimension, `${names[dimension]} in the trailing minute`, unit, [
        { name: "value", label: "counted", points: samples.map((sample, i) => [x(sample), counted[i]!] as const) },
        { name: "limit", label: "limit", points: limitLine(limit), dashed: true }
      ], { yFloor: limit }),
      chart(`${dimension}Allowed`, `${names[dimension]} used and allowed since the start`, unit, [
        { name: "value", label: "used", points: along((sample) => sample[dimension]) },
        {
          name: "limit",
          label: "allowed",
          points: along((sample) => allowance(limit, sample.quotaMinutes)),
          dashed: true
        }
      ])
    ]
  }
  const charts = samples.length === 0
    ? `<p class="empty">No samples were taken: the run ended before the first second.</p>`
    : [
      ...quota("requests"),
      ...quota("inputTokens"),
      ...quota("outputTokens"),
      chart("queue", "Queue depth by priority, and calls in flight", unit, [
        { name: "interactive", label: "interactive", points: along((s) => s.queue.interactive) },
        { name: "normal", label: "normal", points: along((s) => s.queue.normal) },
        { name: "batch", label: "batch", points: along((s) => s.queue.batch) },
        { name: "inFlight", label: "in flight", points: along((s) => s.inFlight) }
      ], { integer: true }),
      chart("errors", "429s, 529s and retries (cumulative)", unit, [
        { name: "http429", label: "429s", points: along((s) => s.http429) },
        { name: "http529", label: "529s", points: along((s) => s.http529) },
        { name: "retries", label: "retries", points: along((s) => s.retries) }
      ], { yFloor: 1, integer: true }),
      chart(
        "done",
        "Documents with an outcome",
        unit,
        [{ name: "done", label: "done", points: along((s) => s.done) }],
        {
          yFloor: summary.documents,
          integer: true
        }
      )
    ].join("")
  const ofLimit = (rate: number, limit: number) =>
    limit > 0 && Number.isFinite(rate)
      ? `${int(rate)} (${Math.round((100 * rate) / limit)} % of ${int(limit)})`
      : `${int(rate)} (limit ${int(limit)})`
  const rows: ReadonlyArray<readonly [string, string]> = [
    ["Documents", int(summary.documents)],
    ["Succeeded", int(summary.succeeded)],
    ["Failed", int(summary.failed)],
    ["Shed", int(summary.shed)],
    ["Over budget", int(summary.overBudget)],
    ["Skipped (done by an earlier run)", int(summary.skipped)],
    ["429 answers", int(summary.http429)],
    ["529 answers", int(summary.http529)],
    ["Retries", int(summary.retries)],
    ["Input tokens", int(summary.inputTokens)],
    ["Output tokens", int(summary.outputTokens)],
    ["Cost", `$${fixed(summary.costUsd, 4)}`],
    ["Wall time", `${fixed(summary.wallSeconds, 1)} s`],
    ...(summary.waitP95Seconds === undefined
      ? []
      : [["Limiter wait, 95th percentile", `${fixed(summary.waitP95Seconds, 2)} s`] as const]),
    ["Requests per minute", ofLimit(summary.requestsPerMinute, limits.requestsPerMinute)],
    ["Input tokens per minute", ofLimit(summary.inputTokensPerMinute, limits.inputTokensPerMinute)],
    ["Output tokens per minute", ofLimit(summary.outputTokensPerMinute, limits.outputTokensPerMinute)],
    ["Stopped early", summary.interrupted ? "yes" : "no"]
  ]
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(input.title)}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f8fafc;color:#0f172a;margin:0;padding:24px}
main{max-width:1100px;margin:0 auto}
h1{font-size:22px;margin:0 0 4px}
.meta{color:#475569;margin:0 0 16px}
.headline{font-size:18px;margin:0 0 16px}
.grid-charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px}
figure{background:#fff;border:1px solid #e2e8f0;border-radius:8px;margin:0;padding:8px 8px 0}
figcaption{font-weight:600;padding:4px 8px}
svg{width:100%;height:auto;font-size:11px}
svg text{fill:#475569}
.axis line{stroke:#94a3b8}
line.grid{stroke:#e2e8f0}
table{border-collapse:collapse;background:#fff;border:1px solid #e2e8f0;margin:16px 0;min-width:480px}
td{padding:6px 12px;border-bottom:1px solid #e2e8f0}
td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.notes li{margin:4px 0}
.bottleneck{background:#fef3c7;border:1px solid #f59e0b;border-radius:8px;padding:8px 12px;margin:0 0 16px}
.empty,.explain{color:#475569}
</style></head>
<body><main>
<h1>${escapeHtml(input.title)}</h1>
<p class="meta">${escapeHtml(input.model)} · generated ${escapeHtml(input.generatedAt)} · limits ${
    int(limits.requestsPerMinute)
  } requests, ${int(limits.inputTokensPerMinute)} input and ${
    int(limits.outputTokensPerMinute)
  } output tokens a minute</p>
<p class="headline">${int(summary.succeeded)} of ${int(summary.documents)} documents extracted, ${
    int(summary.failed + summary.shed + summary.overBudget)
  } not (failed ${int(summary.failed)}, shed ${int(summary.shed)}, over budget ${int(summary.overBudget)})${
    summary.skipped > 0 ? `, ${int(summary.skipped)} skipped` : ""
  } · ${int(summary.http429)} × 429 · ${fixed(summary.wallSeconds, 1)} s${
    summary.interrupted ? " · stopped early" : ""
  }</p>
${
    summary.bottleneck === undefined
      ? ""
      : `<p class="bottleneck">${escapeHtml(summary.bottleneck)}</p>\n`
  }<p class="explain">What the provider counts: each left chart shows what was counted in the minute up to that instant
(during the first minute, since the start; the provider's bucket starts full, so that minute may hold up to twice the
limit). Each right chart shows what the run used since the start against what the quota allowed: one minute's limit at
once plus the refill since; the closer the lines, the closer the run came to the quota.</p>
<section class="grid-charts">${charts}</section>
<table>${
    rows.map(([label, value]) => `<tr><td>${escapeHtml(label)}</td><td>${escapeHtml(value)}</td></tr>`).join("")
  }</table>
${notes.length > 0 ? `<ul class="notes">${notes.map((note) => `<li>${escapeHtml(note)}</li>`).join("")}</ul>` : ""}
</main></body></html>
`
}

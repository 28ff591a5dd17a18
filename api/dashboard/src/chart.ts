// The clicks-per-minute chart (uPlot): one bar per minute, bot clicks stacked
// under human clicks. The legend shows the latest minute, or the hovered one.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import type { Point } from "./api";

const HUMAN = "#2563eb";
const BOT = "#ea580c";
const HEIGHT = 300;

export class ClicksChart {
  private plot: uPlot | null = null;
  /** Per bucket, for the legend: the plotted values are stack heights. */
  private human: number[] = [];
  private bot: number[] = [];

  constructor(private readonly el: HTMLElement) {
    new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: HEIGHT })).observe(el);
  }

  private width(): number {
    return Math.max(this.el.clientWidth, 300);
  }

  update(series: Point[]): void {
    this.human = series.map((p) => p.human_clicks);
    this.bot = series.map((p) => p.bot_clicks);
    // Series 1 is the whole stack (drawn first, behind), series 2 the bot part at its foot.
    const data: uPlot.AlignedData = [
      series.map((p) => Date.parse(p.bucket_start) / 1000),
      series.map((p) => p.human_clicks + p.bot_clicks),
      this.bot,
    ];
    if (this.plot) {
      this.plot.setData(data);
    } else {
      this.plot = new uPlot(this.options(), data, this.el);
    }
    showLatest(this.plot);
    this.el.setAttribute("aria-label", describe(series));
  }

  private options(): uPlot.Options {
    const bars = uPlot.paths.bars!({ size: [0.75, 48], gap: 1 });
    const count = (values: () => number[]) => (_u: uPlot, _v: number | null, _s: number, idx: number | null) =>
      idx == null || values()[idx] == null ? "–" : values()[idx].toLocaleString();
    const axis: uPlot.Axis = { stroke: "#475569", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { show: false } };
    return {
      width: this.width(),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        // Half a minute either side, so the first and last bars are whole.
        x: { time: true, range: (_u, min, max) => [min - 30, max + 30] },
        y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.1))] },
      },
      axes: [axis, { ...axis, size: 56, values: (_u, ticks) => ticks.map((t) => t.toLocaleString()) }],
      series: [
        { label: "Minute", value: (_u, v) => (v == null ? "–" : minute(v)) },
        { label: "Human", fill: HUMAN, stroke: HUMAN, width: 0, paths: bars, points: { show: false }, value: count(() => this.human) },
        { label: "Bot", fill: BOT, stroke: BOT, width: 0, paths: bars, points: { show: false }, value: count(() => this.bot) },
      ],
      hooks: {
        // Leaving the chart puts the legend back on the latest minute.
        setCursor: [(u) => u.cursor.idx == null && showLatest(u)],
      },
    };
  }
}

function showLatest(u: uPlot): void {
  const last = u.data[0].length - 1;
  if (last >= 0 && u.cursor.idx == null) u.setLegend({ idx: last }, false);
}

function minute(secs: number): string {
  return new Date(secs * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The chart in words, for screen readers. */
function describe(series: Point[]): string {
  if (series.length === 0) return "Clicks per minute: no data";
  const sum = (f: (p: Point) => number) => series.reduce((n, p) => n + f(p), 0);
  const peak = series.reduce((a, b) => (b.clicks > a.clicks ? b : a));
  return (
    `Clicks per minute over ${series.length} minutes: ${sum((p) => p.human_clicks)} human, ` +
    `${sum((p) => p.bot_clicks)} bot` +
    (peak.clicks > 0 ? `; busiest minute ${minute(Date.parse(peak.bucket_start) / 1000)} with ${peak.clicks} clicks.` : ".")
  );
}

// Line charts of metrics by step (uPlot, vendored). Each chart's element carries
// data-points: how many points it draws, for people's tools and the browser tests.
import uPlot from "./vendor/uPlot.esm.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777"];

export class LineChart {
  constructor(parent, title, { yLabel = "", log = false } = {}) {
    this.title = title;
    this.yLabel = yLabel;
    this.series = new Map();  // name -> Map(step -> value)
    this.figure = document.createElement("figure");
    this.figure.className = "chart";
    this.figure.dataset.points = "0";
    this.figure.setAttribute("aria-label", `${title} chart`);
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    this.empty = document.createElement("p");
    this.empty.className = "muted";
    this.empty.textContent = "No points yet.";
    this.figure.append(caption, this.empty);
    parent.append(this.figure);
    this.plot = null;
    this.pending = false;
  }

  add(name, step, value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    if (!this.series.has(name)) this.series.set(name, new Map());
    this.series.get(name).set(step, value);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const names = [...this.series.keys()];
    const steps = [...new Set(names.flatMap((n) => [...this.series.get(n).keys()]))]
      .sort((a, b) => a - b);
    const data = [steps, ...names.map((n) => steps.map((s) => this.series.get(n).get(s) ?? null))];
    const points = names.reduce((sum, n) => sum + this.series.get(n).size, 0);
    this.figure.dataset.points = String(points);
    this.figure.dataset.series = names.join(",");
    if (!points) return;
    this.empty.hidden = true;
    const width = Math.max(280, Math.min(this.figure.clientWidth || 600, 1400) - 20);
    if (this.plot && this.plot.series.length === names.length + 1) {
      this.plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot({
      width, height: 240,
      scales: { x: { time: false } },
      // Steps are whole numbers: no tick at step 1.2.
      axes: [{ label: "step", stroke: "currentColor", grid: { stroke: "#8884" },
               incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000] },
             { label: this.yLabel, stroke: "currentColor", grid: { stroke: "#8884" } }],
      series: [{ label: "step" }, ...names.map((n, i) => ({
        label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
        points: { show: steps.length < 60 },
      }))],
    }, data, this.figure);
  }
}

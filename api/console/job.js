// One job: status, progress and ETA, live loss / accuracy / learning-rate curves from its
// event stream, events, checkpoints and artifacts to download, cancel / pause / resume.
import { api, download, streamEvents } from "./api.js";
import { LineChart } from "./chart.js";
import { duration, errorBox, h, table, when } from "./dom.js";
import { progressBar } from "./jobs.js";

// A checkpoint's metrics worth a glance in a table cell (the API has them all).
const SHOWN_METRICS = ["train_loss", "valid_loss", "train_mean_token_accuracy"];

function saveButton(label, path, filename) {
  return h("button", { type: "button", className: "download", onclick: async (e) => {
    const button = e.target;
    button.disabled = true;
    try { await download(path, filename); button.textContent = `${label} ✓`; }
    catch (error) { button.after(errorBox(error)); }
    finally { button.disabled = false; }
  } }, label);
}

export function jobPage(main, jobId) {
  const controller = new AbortController();
  const header = h("div", { id: "job-header" });
  const actions = h("div", { className: "row-inline", role: "group", "aria-label": "Job actions" });
  const notice = h("div", { "aria-live": "polite" });
  const charts = h("div", { className: "charts" });
  const loss = new LineChart(charts, "Loss", { yLabel: "loss" });
  const accuracy = new LineChart(charts, "Token accuracy", { yLabel: "accuracy" });
  const rate = new LineChart(charts, "Learning rate", { yLabel: "learning rate" });
  loss.figure.id = "loss-chart"; accuracy.figure.id = "accuracy-chart"; rate.figure.id = "lr-chart";
  const events = h("ol", { id: "events", className: "events", reversed: true });
  const outputs = h("div", { id: "outputs" });
  let job = null;
  let streaming = false;
  let lastEventId = null;
  let polls = 0;

  function onEvent(event) {
    lastEventId = event.id;
    const d = event.data || {};
    if (event.type === "metrics" && typeof d.step === "number") {
      loss.add("train loss", d.step, d.loss);
      loss.add("validation loss", d.step, d.eval_loss);
      accuracy.add("train", d.step, d.mean_token_accuracy);
      accuracy.add("validation", d.step, d.eval_mean_token_accuracy);
      rate.add("learning rate", d.step, d.learning_rate);
    }
    events.prepend(h("li", { className: `level-${event.level}` },
      h("time", {}, when(event.created_at)), " ", event.message));
    while (events.children.length > 300) events.lastChild.remove();
  }

  async function stream() {
    if (streaming || controller.signal.aborted) return;
    streaming = true;
    try { lastEventId = await streamEvents(jobId, onEvent, controller.signal, lastEventId); }
    catch (error) { if (!controller.signal.aborted) notice.replaceChildren(errorBox(error)); }
    finally { streaming = false; }
  }

  async function act(verb) {
    notice.replaceChildren();
    try { show(await api(`/v1/fine_tuning/jobs/${jobId}/${verb}`, { method: "POST" })); }
    catch (error) { notice.replaceChildren(errorBox(error)); }
  }

  async function showOutputs() {
    const [checkpoints, artifacts] = await Promise.all([
      api(`/v1/fine_tuning/jobs/${jobId}/checkpoints?limit=100`),
      api(`/v1/fine_tuning/jobs/${jobId}/artifacts`)]);
    const folders = [...new Set(artifacts.data.filter((a) => a.name.includes("/"))
      .map((a) => a.name.split("/")[0]))];
    outputs.replaceChildren(
      table("Checkpoints", ["Step", "Model name", "Metrics", ""], checkpoints.data.map((c) => [
        c.step_number, h("code", {}, c.fine_tuned_model_checkpoint),
        Object.entries(c.metrics).filter(([k]) => SHOWN_METRICS.includes(k))
          .map(([k, v]) => `${k}=${typeof v === "number" ? v.toPrecision(4) : v}`).join(", "),
        saveButton("Download .tar.gz", `/v1/fine_tuning/jobs/${jobId}/checkpoints/${c.id}.tar.gz`,
          `${jobId}-step-${c.step_number}.tar.gz`)])),
      table("Artifacts", ["Name", "Size", "sha256", ""], [
        ...folders.map((f) => [h("strong", {}, `${f}/`), "", "folder, as one archive",
          saveButton(`Download ${f}.tar.gz`, `/v1/fine_tuning/jobs/${jobId}/artifacts/${f}.tar.gz`, `${f}.tar.gz`)]),
        ...artifacts.data.map((a) => [a.name, `${a.bytes} B`, h("code", {}, (a.sha256 || "").slice(0, 12)),
          saveButton("Download", `/v1/fine_tuning/jobs/${jobId}/artifacts/${a.name}`, a.name.split("/").pop())])]));
  }

  function show(next) {
    const changed = !job || job.status_detail !== next.status_detail;
    job = next;
    const s = job.status_detail;
    header.replaceChildren(
      h("h1", {}, `Job ${job.id}`),
      h("p", {}, h("span", { id: "job-status", className: `status ${s}` }, s), " · ",
        `${job.model} · ${job.objective?.type ?? ""} / ${job.tuning?.type ?? ""}`,
        job.fine_tuned_model ? h("span", {}, " · ", h("code", {}, job.fine_tuned_model)) : ""),
      h("p", {}, progressBar(job), job.progress?.eta_seconds != null ?
        h("span", { id: "eta" }, ` · ETA ${duration(job.progress.eta_seconds)}`) : ""),
      job.error?.message ? h("p", { className: "error" }, `${job.error.code}: ${job.error.message}`) : "");
    // Rebuilt only when the status changes, so a keyboard user's focus stays put.
    if (changed) actions.replaceChildren(
      h("button", { type: "button", id: "pause", disabled: !["queued", "running", "validating_files"].includes(s), onclick: () => act("pause") }, "Pause"),
      h("button", { type: "button", id: "resume", disabled: s !== "paused", onclick: () => act("resume") }, "Resume"),
      h("button", { type: "button", id: "cancel", className: "danger", disabled: job.done || s === "cancelling", onclick: () => act("cancel") }, "Cancel"));
    if ((!job.done && s !== "paused") || !lastEventId) stream();
    // New checkpoints appear while it trains: their list is re-read every few polls.
    polls += 1;
    if (changed || (!job.done && polls % 5 === 0)) {
      showOutputs().catch((e) => outputs.replaceChildren(errorBox(e)));
    }
  }

  async function poll() {
    try { show(await api(`/v1/fine_tuning/jobs/${jobId}`)); }
    catch (error) { header.replaceChildren(h("h1", {}, `Job ${jobId}`), errorBox(error)); }
  }

  main.append(header, actions, notice, charts,
    h("section", { "aria-labelledby": "outputs-title" }, h("h2", { id: "outputs-title" }, "Outputs"), outputs),
    h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), events));
  poll();
  const timer = setInterval(() => { if (!job || !job.done || streaming) poll(); }, 2000);
  return () => { clearInterval(timer); controller.abort(); };
}

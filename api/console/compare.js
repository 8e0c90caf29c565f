// Compare: the loss curves of several jobs on one chart (train, and validation where the
// job has one), read from their event pages.
import { api } from "./api.js";
import { LineChart } from "./chart.js";
import { errorBox, h, table } from "./dom.js";

async function allEvents(jobId) {
  const events = [];
  let after = null;
  for (;;) {
    const page = await api(`/v1/fine_tuning/jobs/${jobId}/events?limit=1000${after ? `&after=${after}` : ""}`);
    events.push(...page.data);
    if (!page.has_more) return events.reverse();
    after = page.data.at(-1).id;
  }
}

// The knobs that tell runs apart, as they ran (the objective holds them, "auto" resolved).
function ranWith(job) {
  const kind = job.objective?.type;
  const ran = (kind && job.objective[kind]?.hyperparameters) || job.hyperparameters || {};
  return ["learning_rate", "batch_size", "n_epochs", "max_steps"].filter((k) => k in ran)
    .map((k) => `${k}=${ran[k]}`).join(", ");
}

export function comparePage(main, ids = "") {
  const input = h("input", { id: "compare-ids", value: ids.split(",").filter(Boolean).join(", "),
                             size: 60, "aria-describedby": "compare-help" });
  const body = h("div");
  const form = h("form", { className: "row-inline", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/compare?ids=${input.value.split(/[\s,]+/).filter(Boolean).join(",")}`;
  } }, h("label", { htmlFor: "compare-ids" }, "Job ids"), input, h("button", { type: "submit" }, "Compare"),
  h("small", { id: "compare-help", className: "help" }, "Comma-separated; or tick jobs on the Jobs page."));
  main.append(h("h1", {}, "Compare jobs"), form, body);
  const jobIds = ids.split(",").filter(Boolean);
  if (!jobIds.length) return;
  const chart = new LineChart(body, "Loss by step", { yLabel: "loss" });
  chart.figure.id = "compare-chart";
  Promise.all(jobIds.map(async (id) => [await api(`/v1/fine_tuning/jobs/${id}`), await allEvents(id)]))
    .then((runs) => {
      const lastLoss = new Map();
      for (const [job, events] of runs) {
        const name = job.user_provided_suffix ? `${job.id} (${job.user_provided_suffix})` : job.id;
        for (const e of events) {
          if (e.type !== "metrics" || typeof e.data?.step !== "number") continue;
          chart.add(name, e.data.step, e.data.loss);
          if (typeof e.data.loss === "number") lastLoss.set(job.id, e.data.loss);
          chart.add(`${name} validation`, e.data.step, e.data.eval_loss);
        }
      }
      body.append(table("Jobs compared", ["Job", "Status", "Method", "Hyperparameters", "Last loss"],
        runs.map(([job]) => [h("a", { href: `#/jobs/${job.id}` }, job.id), job.status_detail,
          `${job.objective?.type ?? ""} / ${job.tuning?.type ?? ""}`,
          h("code", {}, ranWith(job)),
          lastLoss.get(job.id)?.toPrecision(4) ?? ""])));
    })
    .catch((error) => body.append(errorBox(error)));
}

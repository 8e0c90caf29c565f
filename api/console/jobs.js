// Jobs: newest first, filtered by status and text, refreshed every few seconds; pick
// several to compare their curves.
import { api } from "./api.js";
import { duration, errorBox, h, when } from "./dom.js";

export const STATUSES = ["validating_files", "queued", "running", "pausing", "paused",
  "cancelling", "succeeded", "failed", "cancelled"];

export function progressBar(job) {
  const p = job.progress || {};
  const share = job.status === "succeeded" ? 1 : p.total_steps ? (p.step || 0) / p.total_steps : 0;
  const label = p.total_steps ? `step ${p.step || 0} of ${p.total_steps}` : job.status_detail;
  return h("span", { className: "progress" },
    h("progress", { max: 1, value: share, "aria-label": `Progress: ${label}` }),
    h("span", { className: "muted" }, ` ${label}`));
}

export function jobsPage(main) {
  const status = h("select", { id: "status-filter" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const text = h("input", { id: "text-filter", type: "search", placeholder: "id, model, suffix…" });
  const body = h("div", { id: "jobs" });
  const compare = h("button", { type: "button", id: "compare-selected", onclick: () => {
    const ids = [...body.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
    location.hash = `#/compare?ids=${ids.join(",")}`;
  } }, "Compare selected");
  const selected = new Set();

  async function refresh() {
    try {
      // OpenAI's status filter knows the public statuses; the finer ones filter here.
      const jobs = (await api("/v1/fine_tuning/jobs?limit=100")).data;
      const needle = text.value.trim().toLowerCase();
      const rows = jobs.filter((j) => (!status.value || j.status_detail === status.value) &&
        (!needle || [j.id, j.model, j.user_provided_suffix, j.fine_tuned_model]
          .some((v) => v && v.toLowerCase().includes(needle))));
      const table = h("table", {}, h("caption", {}, `${rows.length} of ${jobs.length} jobs, newest first`),
        h("thead", {}, h("tr", {}, ["", "Job", "Model", "Method", "Status", "Progress", "ETA", "Created"]
          .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((j) => h("tr", { dataset: { job: j.id, status: j.status_detail } },
          h("td", {}, h("input", { type: "checkbox", value: j.id, checked: selected.has(j.id),
            "aria-label": `Select ${j.id} to compare`,
            onchange: (e) => (e.target.checked ? selected.add(j.id) : selected.delete(j.id)) })),
          h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id)),
          h("td", {}, j.model),
          h("td", {}, `${j.objective?.type ?? ""} / ${j.tuning?.type ?? ""}`),
          h("td", { className: `status ${j.status_detail}` }, j.status_detail),
          h("td", {}, progressBar(j)),
          h("td", {}, duration(j.progress?.eta_seconds)),
          h("td", {}, when(j.created_at))))));
      // The table is rebuilt every few seconds: keep a keyboard user's focus on its row.
      const focused = document.activeElement;
      const row = body.contains(focused) ? focused.closest("tr")?.dataset.job : null;
      body.replaceChildren(table);
      if (row) body.querySelector(`tr[data-job="${row}"] ${focused.tagName === "A" ? "a" : "input"}`)?.focus();
    } catch (error) { body.replaceChildren(errorBox(error)); }
  }
  status.addEventListener("change", refresh);
  text.addEventListener("input", refresh);
  main.append(h("h1", {}, "Jobs"),
    h("div", { className: "row-inline" },
      h("label", { htmlFor: "status-filter" }, "Status"), status,
      h("label", { htmlFor: "text-filter" }, "Search"), text, compare,
      h("a", { href: "#/new", className: "button" }, "New job")),
    body);
  refresh();
  const timer = setInterval(refresh, 3000);
  return () => clearInterval(timer);
}

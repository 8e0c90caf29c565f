// New job: a form generated from GET /v1/methods (every objective and tuning, each field
// with its default and help text). Only fields changed from their defaults are sent; the
// JSON that will be POSTed is shown as it changes.
import { api } from "./api.js";
import { errorBox, h } from "./dom.js";

const shown = (value) => (typeof value === "string" ? value : JSON.stringify(value ?? null));

function resolve(schema, defs) {
  if (schema.$ref) return resolve(defs[schema.$ref.split("/").pop()], defs);
  const refs = (schema.anyOf || []).filter((s) => s.$ref);
  if (refs.length === 1 && schema.anyOf.every((s) => s.$ref || s.type === "null")) {
    return { ...resolve(refs[0], defs), description: schema.description || resolve(refs[0], defs).description };
  }
  return schema;
}

function choices(schema) {
  if (schema.enum) return schema.enum;
  if (schema.type === "boolean") return [true, false];
  const options = schema.anyOf || [];
  if (options.length && options.every((s) => "const" in s || s.enum || s.type === "boolean")) {
    return options.flatMap((s) => ("const" in s ? [s.const] : s.enum || [true, false]));
  }
  return null;
}

// Inputs for an object schema; each input knows its path in the body and its default.
function fields(schema, defs, defaults, path, skip = []) {
  return Object.entries(schema.properties || {}).filter(([name]) => !skip.includes(name))
    .map(([name, raw]) => {
      const sub = resolve(raw, defs);
      const value = defaults ? defaults[name] : raw.default;
      const here = [...path, name];
      const id = `f-${here.join("-")}`;
      const title = raw.title || sub.title || name;
      if (sub.properties) {
        return h("fieldset", {}, h("legend", {}, `${title}`),
          sub.description ? h("p", { className: "help" }, sub.description) : null,
          fields(sub, defs, value, here));
      }
      const help = raw.description || sub.description || "";
      const list = choices(sub);
      const attrs = { id, name: here.join("."), dataset: { path: JSON.stringify(here), default: shown(value) },
                      "aria-describedby": help ? `${id}-help` : undefined };
      const input = list
        ? h("select", attrs, list.map((c) => h("option", { value: shown(c), selected: shown(c) === shown(value) }, shown(c))))
        : h("input", { ...attrs, value: shown(value) });
      return h("div", { className: "field" },
        h("label", { htmlFor: id }, `${title} `, h("code", {}, name)), input,
        help ? h("small", { id: `${id}-help`, className: "help" }, `${help} Default: ${shown(value)}.`) : null);
    });
}

function parse(text) {
  if (/^(-?[\d.]+(e-?\d+)?|true|false|null|\[.*\]|\{.*\})$/is.test(text.trim())) {
    try { return JSON.parse(text); } catch { /* a string after all */ }
  }
  return text;
}

function changed(container) {
  const out = {};
  for (const input of container.querySelectorAll("[data-path]")) {
    if (input.value === input.dataset.default) continue;
    const path = JSON.parse(input.dataset.path);
    let node = out;
    for (const part of path.slice(0, -1)) node = node[part] ??= {};
    node[path.at(-1)] = parse(input.value);
  }
  return out;
}

export function newJobPage(main) {
  main.append(h("h1", {}, "New job"), h("p", { className: "muted" }, "Loading methods…"));
  Promise.all([api("/v1/methods"), api("/v1/files?purpose=fine-tune&limit=100")])
    .then(([methods, files]) => build(main, methods, files.data))
    .catch((error) => main.replaceChildren(h("h1", {}, "New job"), errorBox(error)));
}

function build(main, methods, files) {
  const fileOptions = (none) => [none ? h("option", { value: "" }, "none") : null,
    ...files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id}, ${f.rows} rows)`))];
  const model = h("input", { id: "model", required: true, value: "tiny-llama", "aria-describedby": "model-help" });
  const training = h("select", { id: "training-file", required: true }, fileOptions(false));
  const validation = h("select", { id: "validation-file" }, fileOptions(true));
  const suffix = h("input", { id: "suffix", maxLength: 64 });
  const objective = h("select", { id: "objective" },
    methods.objectives.map((o) => h("option", { value: o.type }, o.type)));
  const tuning = h("select", { id: "tuning" });
  const objectiveFields = h("div");
  const tuningFields = h("div");
  const preview = h("pre", { id: "job-json", tabIndex: 0, "aria-label": "The JSON this form will send" });
  const status = h("div", { "aria-live": "polite" });

  const current = () => methods.objectives.find((o) => o.type === objective.value);
  function body() {
    const kind = objective.value;
    const config = changed(objectiveFields).method?.[kind];
    const tune = changed(tuningFields).tuning || {};
    const spec = { model: model.value.trim(), training_file: training.value };
    if (validation.value) spec.validation_file = validation.value;
    if (suffix.value.trim()) spec.suffix = suffix.value.trim();
    spec.method = { type: kind, ...(config ? { [kind]: config } : {}) };
    spec.tuning = { type: tuning.value, ...tune };
    return spec;
  }
  const update = () => { preview.textContent = JSON.stringify(body(), null, 2); };

  function showTuning() {
    const t = methods.tunings.find((x) => x.type === tuning.value);
    tuningFields.replaceChildren(t ? h("fieldset", {}, h("legend", {}, `Tuning: ${t.type}`),
      h("p", { className: "help" }, t.description), fields(t.schema, t.schema.$defs || {}, t.defaults, ["tuning"], ["type"])) : "");
    update();
  }
  function showObjective() {
    const o = current();
    const kept = tuning.value || "lora";
    tuning.replaceChildren(...methods.tunings.filter((t) => o.tunings.includes(t.type))
      .map((t) => h("option", { value: t.type, selected: t.type === kept }, t.type)));
    const config = resolve(o.schema.properties[o.type], o.schema.$defs || {});
    objectiveFields.replaceChildren(h("fieldset", {}, h("legend", {}, `Objective: ${o.type}`),
      h("p", { className: "help" }, `${o.description} Data formats: ${o.data_formats.join(", ")}.`),
      fields(config, o.schema.$defs || {}, o.defaults, ["method", o.type])));
    showTuning();
  }
  objective.addEventListener("change", showObjective);
  tuning.addEventListener("change", showTuning);

  const form = h("form", { id: "new-job", oninput: update, onchange: update, onsubmit: async (e) => {
    e.preventDefault();
    status.replaceChildren(h("p", {}, "Creating…"));
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body() });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) { status.replaceChildren(errorBox(error)); }
  } },
  h("div", { className: "columns" },
    h("div", {},
      h("fieldset", {}, h("legend", {}, "Job"),
        h("div", { className: "field" }, h("label", { htmlFor: "model" }, "Base model"), model,
          h("small", { id: "model-help", className: "help" }, "A folder under the server's models root, a hub id, or an ft: model.")),
        h("div", { className: "field" }, h("label", { htmlFor: "training-file" }, "Training file"), training),
        h("div", { className: "field" }, h("label", { htmlFor: "validation-file" }, "Validation file"), validation),
        h("div", { className: "field" }, h("label", { htmlFor: "suffix" }, "Suffix"), suffix),
        h("div", { className: "field" }, h("label", { htmlFor: "objective" }, "Objective"), objective),
        h("div", { className: "field" }, h("label", { htmlFor: "tuning" }, "Tuning"), tuning)),
      objectiveFields, tuningFields),
    h("div", { className: "sticky" }, h("h2", {}, "Request body"), preview,
      h("button", { type: "submit", id: "create-job" }, "Create job"), status)));
  main.replaceChildren(h("h1", {}, "New job"),
    files.length ? "" : h("p", { className: "error" }, "Upload a training file first: ",
      h("a", { href: "#/files" }, "Files"), "."), form);
  showObjective();
}

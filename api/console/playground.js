// Playground: one prompt, answered by a base model and a fine-tuned one side by side,
// through POST /v1/chat/completions (where this server has that route).
import { api, ApiError } from "./api.js";
import { errorBox, h } from "./dom.js";

const MISSING = "This server has no inference routes yet (POST /v1/chat/completions answered " +
  "404), so the playground cannot answer. It works once the server has them.";

export function playgroundPage(main) {
  const notice = h("div", { id: "playground-notice", "aria-live": "polite" });
  const base = h("input", { id: "base-model", value: "tiny-llama", required: true });
  const tuned = h("input", { id: "tuned-model", list: "tuned-models", required: true,
                             placeholder: "ft:…" });
  const known = h("datalist", { id: "tuned-models" });
  const prompt = h("textarea", { id: "prompt", rows: 4, required: true });
  // 0 answers greedily, so both columns are repeatable and comparable.
  const temperature = h("input", { id: "temperature", type: "number", min: 0, max: 2, step: 0.1,
                                   value: "0", required: true });
  const answers = h("div", { className: "columns" });
  async function ask(model) {
    const box = h("section", { className: "card" }, h("h2", {}, model), h("p", { className: "muted" }, "…"));
    answers.append(box);
    try {
      const reply = await api("/v1/chat/completions", { method: "POST", json: {
        model, messages: [{ role: "user", content: prompt.value }], max_tokens: 128,
        temperature: Number(temperature.value) } });
      box.lastChild.replaceWith(h("p", { className: "answer" }, reply.choices[0].message.content));
    } catch (error) {
      box.lastChild.replaceWith(errorBox(error));
      if (error.status === 404 && !error.param) notice.replaceChildren(h("p", { className: "error" }, MISSING));
    }
  }
  main.append(h("h1", {}, "Playground"), notice,
    h("form", { className: "card", onsubmit: (e) => {
      e.preventDefault(); answers.replaceChildren(); ask(base.value.trim()); ask(tuned.value.trim());
    } },
    h("div", { className: "field" }, h("label", { htmlFor: "base-model" }, "Base model"), base),
    h("div", { className: "field" }, h("label", { htmlFor: "tuned-model" }, "Fine-tuned model"), tuned, known),
    h("div", { className: "field" }, h("label", { htmlFor: "prompt" }, "Prompt"), prompt),
    h("div", { className: "field" }, h("label", { htmlFor: "temperature" }, "Temperature"), temperature),
    h("button", { type: "submit" }, "Ask both")), answers);
  api("/v1/fine_tuning/jobs?limit=100&status=succeeded").then((jobs) => known.replaceChildren(
    ...jobs.data.filter((j) => j.fine_tuned_model).map((j) => h("option", { value: j.fine_tuned_model }))));
  // Does the route exist? An empty body is refused with 400 where it does.
  api("/v1/chat/completions", { method: "POST", json: {} }).catch((error) => {
    if (error instanceof ApiError && error.status === 404) notice.replaceChildren(h("p", { className: "error" }, MISSING));
  });
}

// Files: upload (drop or choose) with a progress bar, every bad line by its number, the
// list, and a preview of a file's first rows with their token counts.
import { api, upload } from "./api.js";
import { errorBox, h, table, when } from "./dom.js";

export function filesPage(main) {
  const progress = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true,
                                    "aria-label": "Upload progress" });
  const result = h("div", { id: "upload-result", "aria-live": "polite" });
  const listing = h("div");
  const preview = h("section", { id: "preview", "aria-label": "Preview" });
  const input = h("input", { id: "file-input", type: "file", accept: ".jsonl,.json,application/jsonl",
                              onchange: () => input.files[0] && send(input.files[0]) });
  const zone = h("div", { id: "drop-zone", className: "drop", tabIndex: 0, role: "button",
                           "aria-label": "Drop a JSONL file here, or press Enter to choose one",
                           onclick: () => input.click(),
                           onkeydown: (e) => (e.key === "Enter" || e.key === " ") && input.click(),
                           ondragover: (e) => { e.preventDefault(); zone.classList.add("over"); },
                           ondragleave: () => zone.classList.remove("over"),
                           ondrop: (e) => {
                             e.preventDefault(); zone.classList.remove("over");
                             if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
                           } },
  "Drop a JSONL file here, or click to choose one");

  async function send(file) {
    progress.hidden = false; progress.value = 0;
    result.replaceChildren(h("p", {}, `Uploading ${file.name}…`));
    try {
      const uploaded = await upload(file, (share) => { progress.value = share; });
      progress.value = 1;
      result.replaceChildren(h("p", { className: "ok" },
        `Uploaded ${uploaded.filename} as ${uploaded.id}: ${uploaded.rows} rows (${uploaded.format}).`));
      refresh();
      showPreview(uploaded.id);
    } catch (error) {
      const bad = error.details.filter((d) => d.line);
      result.replaceChildren(errorBox(error));
      if (bad.length) {
        result.append(h("h2", {}, `Bad lines (${bad.length})`),
          h("ul", { id: "bad-lines" }, bad.map((d) =>
            h("li", { dataset: { line: d.line } }, h("strong", {}, `Line ${d.line}`), `: ${d.message}`))));
      }
    } finally {
      input.value = "";
    }
  }

  async function refresh() {
    try {
      const files = (await api("/v1/files?purpose=fine-tune&limit=100")).data;
      listing.replaceChildren(table("Your files", ["ID", "Name", "Rows", "Size", "Uploaded", ""],
        files.map((f) => [f.id, f.filename, f.rows, `${f.bytes} B`, when(f.created_at),
          h("button", { type: "button", onclick: () => showPreview(f.id) }, "Preview")])));
    } catch (error) { listing.replaceChildren(errorBox(error)); }
  }

  const model = h("input", { id: "preview-model", placeholder: "e.g. tiny-llama",
                              value: localStorage.getItem("tunesmith.previewModel") || "" });
  let shown = null;
  async function showPreview(fileId) {
    shown = fileId;
    const name = model.value.trim();
    localStorage.setItem("tunesmith.previewModel", name);
    const query = `limit=10${name ? `&model=${encodeURIComponent(name)}` : ""}`;
    try {
      const page = await api(`/v1/files/${fileId}/preview?${query}`);
      const note = name ? `Tokens from ${name}'s tokenizer (all the row's text; the chat ` +
        "template adds a few)." : "No model chosen: characters only. Name a model to count tokens.";
      preview.replaceChildren(h("h2", {}, `Preview of ${fileId}`), h("p", { className: "muted" }, note),
        table(`First ${page.data.length} of ${page.rows} rows`, ["Line", "Tokens", "Characters", "Row"],
          page.data.map((r) => [r.line, r.tokens ?? "—", r.characters,
            h("code", { className: "row" }, JSON.stringify(r.row).slice(0, 300))])));
    } catch (error) { preview.replaceChildren(errorBox(error)); }
  }

  main.append(h("h1", {}, "Files"),
    h("section", { className: "card" }, h("h2", {}, "Upload"), zone,
      h("label", { htmlFor: "file-input" }, "Or choose a file"), input, progress, result),
    h("div", { className: "row-inline" },
      h("label", { htmlFor: "preview-model" }, "Count tokens with the tokenizer of"), model,
      h("button", { type: "button", onclick: () => shown && showPreview(shown) }, "Recount")),
    preview, listing);
  refresh();
}

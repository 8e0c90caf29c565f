// The public /v1 API with the key of this browser tab (sessionStorage: gone when the tab
// closes, never sent anywhere but this origin).

const KEY = "tunesmith.key";

export const key = () => sessionStorage.getItem(KEY);
export const setKey = (value) => sessionStorage.setItem(KEY, value);
export const clearKey = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param;
    this.code = error.code;
    this.details = error.details || [];
  }
}

const headers = (extra = {}) => ({ Authorization: `Bearer ${key()}`, ...extra });

async function bodyOf(response) {
  const text = await response.text();
  try { return JSON.parse(text); } catch { return { error: { message: text } }; }
}

export async function api(path, { method = "GET", json, signal } = {}) {
  const init = { method, signal, headers: headers(json ? { "Content-Type": "application/json" } : {}) };
  if (json !== undefined) init.body = JSON.stringify(json);
  const response = await fetch(path, init);
  const body = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// fetch() cannot report upload progress; XMLHttpRequest can.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let body;
      try { body = JSON.parse(xhr.responseText); } catch { body = {}; }
      if (xhr.status === 200) resolve(body); else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: "Network error during upload" } }));
    const form = new FormData();
    form.append("file", file);
    form.append("purpose", "fine-tune");
    xhr.send(form);
  });
}

// A download needs the key, so a plain link cannot do it: fetch, then save the blob.
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, await bodyOf(response));
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Server-sent events over fetch(): EventSource cannot send an Authorization header.
// Reconnects with Last-Event-ID after a dropped connection; resolves when the server ends
// the stream with [DONE] (the job ended or paused), with the last event's id.
export async function streamEvents(jobId, onEvent, signal, after = null) {
  let lastId = after;
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const response = await fetch(`/v1/fine_tuning/jobs/${jobId}/events?stream=true`, {
        headers: headers(lastId ? { "Last-Event-ID": lastId } : {}), signal,
      });
      if (!response.ok) throw new ApiError(response.status, await bodyOf(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = { data: [] };
          for (const line of frame.split("\n")) {
            if (line.startsWith(":")) continue;  // a keep-alive comment
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (name === "data") fields.data.push(val); else fields[name] = val;
          }
          const data = fields.data.join("\n");
          if (fields.id) lastId = fields.id;
          if (data === "[DONE]") return lastId;
          if (fields.event === "error") throw new ApiError(401, JSON.parse(data));
          if (data) onEvent(JSON.parse(data));
        }
      }
      attempt = 0;
    } catch (error) {
      if (signal.aborted || error instanceof ApiError) throw error;
    }
    await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 10000)));
  }
}

// The console's small amount of JavaScript: changes go to the admin API (with the console header, so the
// session cookie is accepted), and live figures are polled from it. No build step, no dependencies.
"use strict";

async function api(method, path, body) {
  const options = {method, headers: {"X-Inflow-Console": "1", "Accept": "application/json"}, credentials: "same-origin"};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const reason = data && data.error ? data.error.reason : response.statusText;
    throw new Error(`${response.status}: ${reason}`);
  }
  return data;
}

function flash(text, isError) {
  const el = document.getElementById("flash");
  if (!el) return;
  el.hidden = false;
  el.className = isError ? "error" : "ok";
  el.textContent = text;
}

function afterChange(el, data) {
  const show = el.dataset.show;
  if (show && data && data[show]) {
    flash(`${el.dataset.done || "done"}: ${show} = ${data[show]} (shown once: copy it now)`);
    return;
  }
  let text = el.dataset.done || "done";
  if (data && data.redriven) text += ` (${data.redriven.length} batch${data.redriven.length === 1 ? "" : "es"})`;
  if (data && data.result) text += `: ${data.result}${data.status ? " HTTP " + data.status : ""} ${data.reason || ""}`;
  flash(text);
  if (el.dataset.reload) setTimeout(() => location.reload(), 300);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-call]");
  if (!button) return;
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  const [method, path] = button.dataset.call.split(" ");
  button.disabled = true;
  try {
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    afterChange(button, await api(method, path, body));
  } catch (err) {
    flash(err.message, true);
  } finally {
    button.disabled = false;
  }
});

function formBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("input[name]")) {
    const raw = input.value.trim();
    const type = input.dataset.type;
    if (raw === "" && input.dataset.empty === "null") { body[input.name] = null; continue; }
    if (type === "int") body[input.name] = parseInt(raw, 10);
    else if (type === "float") body[input.name] = parseFloat(raw);
    else if (type === "floats") body[input.name] = raw ? raw.split(",").map((v) => parseFloat(v)) : [];
    else if (type === "list") body[input.name] = raw ? raw.split(",").map((v) => v.trim()).filter(Boolean) : [];
    else if (type === "list-or-all") body[input.name] = raw === "" || raw === "all" ? "all" : raw.split(",").map((v) => v.trim());
    else body[input.name] = raw;
  }
  return body;
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const [method, template] = form.dataset.api.split(" ");
  const body = formBody(form);
  // A path like /api/workspaces/{workspace_id}/limits takes that field out of the body.
  const path = template.replace(/{(\w+)}/g, (_, name) => {
    const value = encodeURIComponent(body[name] || "");
    delete body[name];
    return value;
  });
  try {
    const data = await api(method, path, body);
    form.dataset.done = form.dataset.done || "saved";
    afterChange(form, data);
  } catch (err) {
    flash(err.message, true);
  }
});

// --- live figures -----------------------------------------------------------------------------------
const SERIES = ["ingested", "enriched", "delivered"];

function drawChart(svg, points) {
  const width = 600, height = 160;
  const values = points.flatMap((p) => SERIES.map((s) => p[s] || 0));
  const max = Math.max(1, ...values);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  SERIES.forEach((name) => {
    const line = document.createElementNS(ns, "polyline");
    const step = points.length > 1 ? width / (points.length - 1) : width;
    line.setAttribute("points", points.map((p, i) => `${(i * step).toFixed(1)},${(height - ((p[name] || 0) / max) * (height - 8)).toFixed(1)}`).join(" "));
    line.setAttribute("class", `s-${name}`);
    svg.appendChild(line);
  });
  const label = document.getElementById("chart-max");
  if (label) label.textContent = `top of chart: ${max.toFixed(1)}/s`;
}

function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value === null || value === undefined ? "-" : String(value);
}

async function refreshOverview() {
  const data = await api("GET", "/api/overview");
  const last = data.series.length ? data.series[data.series.length - 1] : {};
  SERIES.forEach((s) => setText(`rate-${s}`, last[s]));
  setText("total-rejected", data.totals.rejected);
  setText("total-dlq", data.totals.dlq);
  setText("overview-problem", data.problem || "");
  drawChart(document.getElementById("chart"), data.series);
  const body = document.querySelector("#components tbody");
  if (body && data.components.length) {
    body.replaceChildren(...data.components.map((c) => {
      const row = document.createElement("tr");
      row.dataset.component = c.component;
      const cells = [c.component, c.status, c.lag, c.errors === null ? null : Math.round(c.errors), c.url];
      cells.forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? "-" : String(value);
        if (i === 1) td.className = `status ${c.status}`;
        row.appendChild(td);
      });
      return row;
    }));
  }
}

async function refreshStreams() {
  const data = await api("GET", "/api/streams");
  for (const s of data.streams) {
    const delivered = document.querySelector(`[data-stream-delivered="${CSS.escape(s.id)}"]`);
    const rate = document.querySelector(`[data-stream-rate="${CSS.escape(s.id)}"]`);
    if (delivered) delivered.textContent = s.delivery ? String(Math.round(s.delivery.delivered)) : "-";
    if (rate) rate.textContent = s.delivery ? String(s.delivery.per_s) : "-";
  }
}

function poll(fn) {
  const run = () => fn().catch((err) => flash(err.message, true));
  run();
  setInterval(run, 2000);
}

if (document.querySelector('[data-live="overview"]')) poll(refreshOverview);
if (document.querySelector('[data-live="streams"]')) poll(refreshStreams);

// The /usage page: reads the exporter's JSON read API (with the tenant token when auth is on) and
// renders it. Plain DOM, no framework, no build step; every client-supplied string (customer names,
// error messages) is set with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "llm-usage-token";
const params = new URLSearchParams(location.search);
const state = {
  tenant: params.get("tenant") || "",
  sort: params.get("sort") || "cost_usd",
  order: params.get("order") || "desc",
  customer: params.get("customer") || "",
  refresh: Math.max(1, Number(params.get("refresh")) || 10),
  tenants: [],
  errorsKept: 10,
  timer: null,
};
const $ = (id) => document.getElementById(id);
const fmtInt = (n) => Number(n).toLocaleString("en-US");
const fmtUsd = (n) => "$" + Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const fmtTime = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "—");

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "exporter unreachable");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || "HTTP " + response.status);
  return body;
}

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function writeUrl(push) {
  const next = new URLSearchParams();
  if (state.tenant) next.set("tenant", state.tenant);
  next.set("sort", state.sort);
  next.set("order", state.order);
  if (state.customer) next.set("customer", state.customer);
  if (params.get("refresh")) next.set("refresh", String(state.refresh));
  const url = location.pathname + "?" + next.toString();
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function cell(row, text, value) {
  const td = document.createElement("td");
  td.textContent = text;
  if (value !== undefined) td.dataset.value = String(value);
  row.appendChild(td);
  return td;
}

function bars(container, days, field) {
  container.replaceChildren();
  const max = Math.max(...days.map((d) => d[field]), 0);
  days.forEach((d, i) => {
    const bar = document.createElement("div");
    bar.className = "bar" + (i === days.length - 1 ? " today" : "");
    bar.style.height = max > 0 ? (100 * d[field] / max).toFixed(2) + "%" : "0";
    bar.dataset.day = d.day;
    bar.dataset.value = String(d[field]);
    bar.title = d.day + ": " + fmtUsd(d[field]) + ", " + fmtInt(d.events) + " requests";
    container.appendChild(bar);
  });
}

function renderTenants() {
  const select = $("tenant");
  const names = state.tenants.map((t) => t.tenant);
  if (names.join("\n") !== Array.from(select.options, (o) => o.value).join("\n")) {
    select.replaceChildren(...names.map((name) => new Option(name, name)));
  }
  select.value = state.tenant;
}

function renderOverview(tenant, daily) {
  const today = daily.daily[daily.daily.length - 1];
  const spend = $("today-spend");
  spend.textContent = fmtUsd(today.cost_usd);
  spend.dataset.value = String(today.cost_usd);
  const budget = tenant.budget_usd_per_day;
  const meter = $("today-meter");
  if (budget) {
    const share = today.cost_usd / budget;
    $("today-budget").textContent = "of " + fmtUsd(budget) + " daily budget (" + (100 * share).toFixed(1) + " %)";
    meter.hidden = false;
    meter.classList.toggle("over", share > 1);
    meter.firstElementChild.style.width = Math.min(100, 100 * share).toFixed(1) + "%";
  } else {
    $("today-budget").textContent = "(no daily budget configured)";
    meter.hidden = true;
  }
  bars($("tenant-bars"), daily.daily, "cost_usd");
}

function renderCustomers(rows) {
  const body = $("customers").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.customer = r.customer;
    const first = cell(tr, "", r.customer);
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = r.customer;
    link.addEventListener("click", (e) => { e.preventDefault(); state.customer = r.customer; writeUrl(true); refresh(); });
    first.appendChild(link);
    cell(tr, fmtInt(r.events), r.events);
    cell(tr, fmtInt(r.input_tokens), r.input_tokens);
    cell(tr, fmtInt(r.output_tokens), r.output_tokens);
    cell(tr, fmtUsd(r.cost_usd), r.cost_usd);
    cell(tr, fmtInt(r.errors), r.errors);
    cell(tr, fmtTime(r.latest_timestamp), r.latest_timestamp);
    body.appendChild(tr);
  }
  for (const th of $("customers").tHead.rows[0].cells) {
    if (th.dataset.sort === state.sort) th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

function renderCustomer(daily, errors) {
  $("customer").hidden = false;
  $("customer-name").textContent = state.customer;
  bars($("customer-bars"), daily.daily, "cost_usd");
  const body = $("customer-daily").tBodies[0];
  body.replaceChildren();
  for (const d of daily.daily.slice().reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.day = d.day;
    cell(tr, d.day, d.day);
    cell(tr, fmtInt(d.events), d.events);
    cell(tr, fmtInt(d.input_tokens), d.input_tokens);
    cell(tr, fmtInt(d.output_tokens), d.output_tokens);
    cell(tr, fmtUsd(d.cost_usd), d.cost_usd);
    cell(tr, fmtInt(d.errors), d.errors);
    body.appendChild(tr);
  }
  const mine = errors.filter((e) => e.customer === state.customer);
  const errBody = $("customer-errors").tBodies[0];
  errBody.replaceChildren();
  for (const e of mine) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(e.timestamp), e.timestamp);
    cell(tr, e.model || "");
    cell(tr, e.error_type || "");
    cell(tr, e.error_message || "");
    errBody.appendChild(tr);
  }
  $("customer-errors").hidden = mine.length === 0;
  $("no-errors").hidden = mine.length !== 0;
}

async function load() {
  const listing = await api("/v1/tenants");
  state.tenants = listing.tenants;
  state.errorsKept = listing.recent_errors_kept || 10;
  if (!state.tenants.some((t) => t.tenant === state.tenant)) {
    state.tenant = state.tenants.length ? state.tenants[0].tenant : "";
    state.customer = "";
    writeUrl(false);
  }
  renderTenants();
  $("login").hidden = true;
  $("content").hidden = false;
  if (!state.tenant) {
    $("empty").hidden = false;
    $("overview").hidden = $("customers-section").hidden = $("customer").hidden = true;
    return;
  }
  const t = encodeURIComponent(state.tenant);
  const [daily, customers] = await Promise.all([
    api(`/v1/tenants/${t}/usage/daily?days=30`),
    api(`/v1/tenants/${t}/customers?sort=${state.sort}&order=${state.order}&limit=1000`),
  ]);
  const empty = customers.customers.length === 0;
  $("empty").hidden = !empty;
  $("overview").hidden = $("customers-section").hidden = empty;
  renderOverview(state.tenants.find((x) => x.tenant === state.tenant), daily);
  renderCustomers(customers.customers);
  if (state.customer && !empty) {
    const c = encodeURIComponent(state.customer);
    const [mine, errors] = await Promise.all([
      api(`/v1/tenants/${t}/usage/daily?days=30&customer=${c}`),
      api(`/v1/tenants/${t}/errors?limit=${state.errorsKept}`),
    ]);
    renderCustomer(mine, errors.errors);
  } else {
    $("customer").hidden = true;
  }
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    await load();
    setStatus("ok", "Updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      $("content").hidden = true;
      $("login").hidden = false;
      const message = $("login-error");
      message.hidden = !sessionStorage.getItem(TOKEN_KEY);
      message.textContent = err.message;
      setStatus("auth", "Token required");
      return;  // no polling without a token; submitting the form starts again
    }
    setStatus("error", err.status === 0
      ? "Exporter unreachable — retrying every " + state.refresh + " s"
      : "Error: " + err.message + " — retrying every " + state.refresh + " s");
  }
  state.timer = setTimeout(refresh, state.refresh * 1000);
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  setStatus("loading", "Loading…");
  refresh();
});
$("tenant").addEventListener("change", (e) => {
  state.tenant = e.target.value; state.customer = ""; writeUrl(true); refresh();
});
$("close-customer").addEventListener("click", (e) => {
  e.preventDefault(); state.customer = ""; writeUrl(true); refresh();
});
for (const th of $("customers").tHead.rows[0].cells) {
  th.addEventListener("click", () => {
    const key = th.dataset.sort;
    state.order = key === state.sort ? (state.order === "desc" ? "asc" : "desc") : (key === "customer" ? "asc" : "desc");
    state.sort = key;
    writeUrl(true);
    refresh();
  });
}
window.addEventListener("popstate", () => {
  const p = new URLSearchParams(location.search);
  state.tenant = p.get("tenant") || ""; state.sort = p.get("sort") || "cost_usd";
  state.order = p.get("order") || "desc"; state.customer = p.get("customer") || "";
  refresh();
});
$("refresh-seconds").textContent = String(state.refresh);
writeUrl(false);
refresh();

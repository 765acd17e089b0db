"use strict";
// Every value from the service is set with textContent: nothing is parsed as HTML.
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function reset(id, title) { const s = $(id); s.replaceChildren(el("h2", title)); return s; }
function pretty(enumName, prefix) { return (enumName || "").replace(prefix, "").toLowerCase().replaceAll("_", " "); }
function when(ts) { return ts ? new Date(ts).toLocaleString() : ""; }
// Long errors (a gRPC message can run to hundreds of characters) are cut in the header,
// whole in the tooltip.
function status(text, error) {
  const s = $("status");
  s.textContent = text.length > 160 ? text.slice(0, 157) + "…" : text;
  s.title = text;
  s.className = error ? "error" : "";
}

// POSTs carry the session's CSRF token (from /api/session); the server also checks that
// they come from this origin.
let csrf = "";
async function api(path, options) {
  options = options || {};
  if (options.method === "POST") options.headers = { ...(options.headers || {}), "X-CSRF-Token": csrf };
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.error}: ${body.message}`);
  return body;
}

const KEY_FEATURES = ["tenure_months", "plan_tier", "monthly_spend", "data_usage_gb", "contract_months_left",
                      "churn_risk", "complaints_90d", "product_views_24h", "session_product_views"];

function showProfile(p) {
  const s = reset("profile", "Customer");
  const a = p.attributes || {};
  s.append(el("h3", `${a.first_name || "Unknown"} · ${p.customer_id}`));
  const stage = el("span", pretty(p.lifecycle_stage, "LIFECYCLE_STAGE_"), "stage");
  stage.id = "stage";
  s.append(stage, el("div", p.lifecycle_reason, "meta"));
  const dl = el("dl");
  for (const [k, v] of Object.entries(a)) { dl.append(el("dt", k.replaceAll("_", " ")), el("dd", v)); }
  for (const k of KEY_FEATURES) {
    if (k in (p.features || {})) dl.append(el("dt", k.replaceAll("_", " ")), el("dd", Math.round(p.features[k] * 100) / 100));
  }
  s.append(dl);
  if (!p.known) s.append(el("p", "New visitor: no stored profile.", "empty"));

  const act = reset("activity", "Recent activity (all channels)");
  const events = p.recent_events || [];
  if (!events.length) act.append(el("p", "No recent events.", "empty"));
  const ul = el("ul");
  for (const e of events.slice(0, 10)) {
    const cat = (e.attributes || {}).category;
    ul.append(el("li", `${pretty(e.channel, "CHANNEL_")}: ${e.event_type}${cat ? " (" + cat + ")" : ""} · ${when(e.occurred_at)}`));
  }
  act.append(ul);

  showOffersMade(p.recent_decisions || []);
  showPolicy(p);
}

// One line an offer (newest first): how often it was made, where, and the latest answer,
// so that a decline is not pushed out of view by the offers made with it.
function showOffersMade(made) {
  const off = reset("offers", "Offers made");
  if (!made.length) off.append(el("p", "No offers yet.", "empty"));
  const byOffer = new Map();
  for (const d of made) {  // newest first
    const seen = byOffer.get(d.offer_id) || { name: d.offer_name || d.offer_id, times: 0, channels: new Set(), answer: "", at: "" };
    seen.times += 1;
    seen.channels.add(pretty(d.channel, "CHANNEL_"));
    const outcomes = d.outcomes || [];
    if (!seen.answer && outcomes.length) { seen.answer = pretty(outcomes[outcomes.length - 1], "OUTCOME_"); seen.at = when(d.decided_at); }
    byOffer.set(d.offer_id, seen);
  }
  const list = el("ul");
  list.id = "offers-made";
  for (const [offerId, o] of byOffer) {
    const answer = o.answer ? `${o.answer} (${o.at})` : "no answer yet";
    const item = el("li", `${o.name}: ${o.times}× on ${[...o.channels].join(", ")}; latest answer: ${answer}`);
    item.dataset.offer = offerId;
    list.append(item);
  }
  off.append(list);
}

// What the contact policy holds, consent and its provenance, and the stage history.
function showPolicy(p) {
  const s = reset("policy", "Contact policy and consent");
  const items = el("ul");
  items.id = "policy-state";
  for (const c of p.consent || []) {
    const how = c.source === "event" ? `${pretty(c.via, "CHANNEL_")}, ${when(c.at)}` : "profile";
    items.append(el("li", `${c.channel}: ${c.given ? "opted in" : "opted out"} (${how})`));
  }
  for (const o of p.contact_state || []) {
    const parts = [];
    if (o.cooldown_until) parts.push(`cooling down, ${o.cooldown_days_left} days left`);
    if (o.suppressed_since) parts.push(`accepted ${when(o.suppressed_since)}: not offered again`);
    for (const c of o.caps || []) parts.push(`${c.used} of ${c.window}`);
    items.append(el("li", `${o.offer_name}: ${parts.join("; ")}`));
  }
  for (const c of p.channel_caps || []) {
    const what = c.budget ? `marketing budget (${c.channel})` : c.channel;
    items.append(el("li", `${what}: ${c.used} of ${c.window}`));
  }
  if (!items.children.length) items.append(el("li", "Nothing held.", "empty"));
  s.append(items);
  const steps = p.stage_transitions || [];
  if (steps.length) {
    s.append(el("h2", "Stage history"));
    const ul = el("ul");
    ul.id = "stage-history";
    for (const t of steps) {
      ul.append(el("li", `${pretty(t.from_stage, "LIFECYCLE_STAGE_")} → ${pretty(t.to_stage, "LIFECYCLE_STAGE_")} · ${when(t.at)} (${t.reason})`));
    }
    s.append(ul);
  }
  // Event triggers waiting to reach out: what the customer is about to receive.
  const waiting = p.pending_triggers || [];
  if (waiting.length) {
    s.append(el("h2", "Messages on the way"));
    const ul = el("ul");
    ul.id = "pending-triggers";
    for (const t of waiting) ul.append(el("li", `${t.trigger_id} · ${when(t.due)} (after ${t.event_type})`));
    s.append(ul);
  }
}

function showActions(customerId, r) {
  const s = reset("actions", "Next best actions");
  if (r.degraded) {
    const banner = el("p", `Degraded answer: ${r.degraded_reason}. Check with the customer before offering.`, "banner");
    banner.id = "degraded";
    s.append(banner);
  }
  if (!r.actions.length) s.append(el("p", "Nothing to offer right now.", "empty"));
  for (const a of r.actions) {
    const card = el("div", null, "action");
    card.dataset.offer = a.offer_id;
    card.append(el("h3", `${a.rank}. ${a.message.headline || a.offer_id}`));
    card.append(el("div", a.message.body, "meta"));
    card.append(el("div", a.message.agent_script, "script"));
    card.append(el("div", `priority ${a.priority.toFixed(2)} = propensity ${(a.propensity * 100).toFixed(1)}% × value ${a.value}`, "meta"));
    const why = el("ul");
    for (const reason of a.reasons) {
      if (reason.code === "FEATURE_CONTRIBUTION" || reason.code === "LIFECYCLE_STAGE" || reason.code === "CONTACT_POLICY") why.append(el("li", reason.text));
    }
    card.append(why);
    const buttons = el("div", null, "buttons");
    for (const [outcome, label, cls] of [["accept", "Customer accepts", "accept"], ["decline", "Customer declines", "decline"]]) {
      const b = el("button", label, cls);
      b.addEventListener("click", () => record(customerId, r.decision_id, a.offer_id, outcome));
      buttons.append(b);
    }
    card.append(buttons);
    s.append(card);
  }
  for (const e of r.excluded || []) s.append(el("div", `kept out: ${e.offer_id} (${e.reason})`, "meta"));
}

// The decision and the customer view are asked apart: a decision that answered (even
// degraded, without the profile) is shown when the profile cannot be read.
async function load(customerId, done) {
  status("Loading…");
  let decision = null;
  try {
    // Decide first: the offers it makes are part of the customer view that follows.
    decision = await api(`/api/decide?customer_id=${encodeURIComponent(customerId)}&channel=call_center`);
    showActions(customerId, decision);
  } catch (err) {
    reset("actions", "Next best actions").append(el("p", `No decision: ${err.message}`, "banner"));
  }
  try {
    showProfile(await api(`/api/profile?customer_id=${encodeURIComponent(customerId)}`));
  } catch (err) {
    reset("profile", "Customer").append(el("p", `The customer view cannot be read now: ${err.message}`, "banner"));
    for (const [id, title] of [["activity", "Recent activity (all channels)"], ["offers", "Offers made"], ["policy", "Contact policy and consent"]]) {
      reset(id, title).append(el("p", "Unavailable.", "empty"));
    }
  }
  if (done) status(done);
  else if (decision) status(`model ${decision.model_version}`);
  else status("the service did not decide", true);
}

async function record(customerId, decisionId, offerId, outcome) {
  try {
    await api("/api/outcome", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decision_id: decisionId, customer_id: customerId, offer_id: offerId, outcome }) });
    const confirmed = `recorded: ${offerId} ${outcome} at ${new Date().toLocaleTimeString()}`;
    status(confirmed);
    await new Promise((wait) => setTimeout(wait, 150));  // the decision log is written in the background
    await load(customerId, confirmed);  // the confirmation stays
  } catch (err) { status(err.message, true); }
}

$("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("customer").value.trim();
  if (id) { history.replaceState(null, "", `?customer=${encodeURIComponent(id)}`); load(id); }
});
api("/api/session").then((s) => {
  csrf = s.csrf;
  $("agent").textContent = `signed in as ${s.agent}`;
  const initial = new URLSearchParams(location.search).get("customer");
  if (initial) { $("customer").value = initial; load(initial); }
}).catch((err) => status(err.message, true));

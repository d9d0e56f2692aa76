// The citizen page: reads and changes the signed-in citizen's choices through /consent/me.
// Everything from the server is rendered with textContent (never innerHTML), so data can never become markup.
"use strict";

(function () {
  const TOKEN_KEY = "scr.citizen.token";
  const PURPOSES = { TREAT: "Your care", ETREAT: "Emergency access (break-glass)", HRESCH: "Research",
                     HOPERAT: "Planning" };
  const OUTCOMES = { success: "Allowed", denied: "Refused", error: "Failed" };
  const state = { etag: null, document: null, categories: [], accessBefore: null };

  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function when(iso) {
    const date = new Date(iso);
    return isNaN(date) ? String(iso) : date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
  }

  // ---------------------------------------------------------------- signing in and calling the API

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function takeTokenFromFragment() {
    if (location.hash.startsWith("#token=")) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
      history.replaceState(null, "", location.pathname + location.search);  // keep it out of history
    }
  }

  class ApiError extends Error {
    constructor(status, outcome) {
      const issues = (outcome && outcome.issue) || [];
      super(issues.map((i) => i.diagnostics).filter(Boolean).join(" ") || "Something went wrong (" + status + ")");
      this.status = status;
      this.issues = issues;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = Object.assign({ Authorization: "Bearer " + token(), Accept: "application/json" },
                                  opts.headers || {});
    const response = await fetch(path, Object.assign({}, opts, { headers: headers }));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new ApiError(response.status, body);
    return { body: body, etag: response.headers.get("ETag"), status: response.status };
  }

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("signed-in").hidden = !signedIn;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn(false);
    const error = $("sign-in-error");
    error.textContent = message || "";
    error.hidden = !message;
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      signOut("Paste your sign-in token first.");
      $("token").focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    await loadAll();
  }

  // ---------------------------------------------------------------- loading and rendering

  async function loadAll() {
    try {
      const [me, summary, historyPage, accessPage] = await Promise.all([
        api("/consent/me"), api("/consent/me/summary"), api("/consent/me/history"), api("/consent/me/access-log"),
      ]);
      state.etag = me.etag;
      state.document = me.body;
      state.categories = summary.body.categories;
      showSignedIn(true);
      renderSummary(summary.body);
      renderChoices(me.body);
      renderPermission(summary.body.changes);
      renderHistory(historyPage.body.entries);
      $("access-log").tBodies[0].replaceChildren();
      renderAccess(accessPage.body);
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        signOut("We could not sign you in: " + error.message);
      } else {
        signOut("We could not load your choices: " + error.message);
      }
    }
  }

  function renderSummary(summary) {
    $("statements").replaceChildren(...summary.statements.map((line) => element("li", line)));
    $("object-emergency").textContent = summary.policy.break_glass_overrides_objection
      ? "In an emergency, a clinician can still open your record if they give a reason, and you will see this "
        + "in your access log."
      : "This applies in an emergency too.";
    const records = $("professional-records");
    records.replaceChildren();
    if (summary.professional_records.length) {
      records.append(element("h3", "Recorded for you by health and care staff"));
      const list = element("ul");
      for (const record of summary.professional_records) {
        const by = [record.role_name, record.organisation].filter(Boolean).join(", ");
        list.append(element("li", record.title + " (" + (by || "a professional") + ", " + when(record.since) + ")"));
      }
      records.append(list);
    }
  }

  function renderChoices(doc) {
    $("direct-care-share").checked = doc.direct_care === "share";
    $("direct-care-object").checked = doc.direct_care === "object";
    const box = $("categories");
    box.replaceChildren();
    for (const category of state.categories) {
      const id = "category-" + category.code;
      const option = element("div", null, "option");
      const input = element("input");
      input.type = "checkbox";
      input.id = id;
      input.value = category.code;
      input.checked = category.always_withheld || doc.withheld_categories.includes(category.code);
      input.disabled = category.always_withheld;
      if (category.always_withheld) input.dataset.alwaysWithheld = "true";
      const label = element("label", category.description + (category.always_withheld ? " (always kept private)" : ""));
      label.htmlFor = id;
      option.append(input, label);
      box.append(option);
    }
    $("denied-organisations").value = doc.denied_organisations.join(", ");
    $("national-data-opt-out").checked = doc.national_data_opt_out;
    setFieldError(null);
  }

  // Below P9 the server refuses every save: say so, and disable the form, before anyone tries.
  function renderPermission(changes) {
    const allowed = !changes || changes.allowed;
    for (const control of $("choices").elements) {
      if (!control.dataset.alwaysWithheld) control.disabled = !allowed;
    }
    $("changes-refused").hidden = allowed;
  }

  function renderHistory(entries) {
    const body = $("history").tBodies[0];
    body.replaceChildren();
    for (const entry of entries) {
      const row = element("tr");
      const by = entry.recorded_by.kind === "citizen" ? "You"
        : [entry.recorded_by.role_name, entry.recorded_by.organisation].filter(Boolean).join(", ") || "Staff";
      row.append(element("td", when(entry.recorded_at)), element("td", by),
                 element("td", entry.preferences ? describeChoices(entry.preferences) : entry.summary));
      body.append(row);
    }
    $("history-empty").hidden = entries.length > 0;
  }

  function describeChoices(doc) {
    const parts = [doc.direct_care === "object" ? "Objected to sharing" : "Sharing for your care"];
    if (doc.withheld_categories.length) parts.push("kept private: " + doc.withheld_categories.join(", "));
    if (doc.denied_organisations.length) parts.push("organisations refused: " + doc.denied_organisations.join(", "));
    parts.push(doc.national_data_opt_out ? "opted out of research and planning"
                                         : "research and planning allowed");
    return parts.join("; ") + ".";
  }

  function renderAccess(page) {
    const body = $("access-log").tBodies[0];
    for (const entry of page.entries) {
      const who = entry.who.kind === "citizen" ? "You"
        : [entry.who.role_name || entry.who.role, entry.who.organisation, entry.who.user && "user " + entry.who.user]
            .filter(Boolean).join(", ");
      const what = [entry.action_name, ...entry.what, ...entry.withheld].join("; ");
      const whyCell = element("td", PURPOSES[entry.purpose] || entry.purpose || "");
      if (entry.break_glass) {
        whyCell.className = "break-glass";
        whyCell.textContent = "Emergency access (break-glass): " + (entry.break_glass_reason || "no reason given");
      }
      const row = element("tr");
      row.append(element("td", when(entry.when)), element("td", who || "System"), element("td", what), whyCell,
                 element("td", OUTCOMES[entry.outcome] || entry.outcome));
      body.append(row);
    }
    state.accessBefore = page.next_before;
    $("access-more").hidden = page.next_before === null;
    $("access-empty").hidden = body.rows.length > 0;
  }

  async function loadMoreAccess() {
    try {
      const page = await api("/consent/me/access-log?before=" + encodeURIComponent(state.accessBefore));
      renderAccess(page.body);
    } catch (error) {
      setStatus("We could not load older entries: " + error.message, false);
    }
  }

  // ---------------------------------------------------------------- saving

  function readForm() {
    const alwaysWithheld = new Set(state.categories.filter((c) => c.always_withheld).map((c) => c.code));
    const kept = state.document.withheld_categories.filter((code) => alwaysWithheld.has(code));
    const chosen = Array.from($("categories").querySelectorAll("input:checked:not(:disabled)"), (i) => i.value);
    return {
      direct_care: $("direct-care-object").checked ? "object" : "share",
      withheld_categories: kept.concat(chosen),
      denied_organisations: $("denied-organisations").value.split(/[\s,]+/).filter(Boolean)
        .map((code) => code.toUpperCase()),  // ODS codes are capitals; people type "rh8"
      national_data_opt_out: $("national-data-opt-out").checked,
    };
  }

  function setStatus(message, ok) {
    const status = $("save-status");
    status.textContent = message;
    status.className = "status " + (ok ? "ok" : "failed");
  }

  function setFieldError(message) {
    const error = $("denied-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("denied-organisations").setAttribute("aria-invalid", message ? "true" : "false");
  }

  async function save(event) {
    event.preventDefault();
    setFieldError(null);
    setStatus("Saving…", true);
    try {
      const result = await api("/consent/me", {
        method: "PUT", body: JSON.stringify(readForm()),
        headers: { "Content-Type": "application/json", "If-Match": state.etag || 'W/"0"' },
      });
      await loadAll();
      setStatus(result.status === 201 ? "Your choices have been saved for the first time." : "Your choices have been saved.", true);
    } catch (error) {
      if (error.status === 412 || error.status === 428) {
        await loadAll();
        setStatus("Your choices were changed on another device. We have loaded the latest; please check them "
                  + "and save again.", false);
      } else if (error.status === 401) {
        signOut("Your sign-in has expired. Please sign in again.");
      } else {
        const organisationIssue = error.issues.find((i) => (i.expression || []).some(
          (e) => e.startsWith("denied_organisations")));
        if (organisationIssue) {
          setFieldError(organisationIssue.diagnostics);
          $("denied-organisations").focus();
        }
        setStatus("Your choices were not saved: " + error.message, false);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("You have signed out."));
    $("choices").addEventListener("submit", save);
    $("access-more").addEventListener("click", loadMoreAccess);
    takeTokenFromFragment();
    if (token()) loadAll(); else showSignedIn(false);
  });
})();

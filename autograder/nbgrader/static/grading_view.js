// Grade by question: the page of autograder/nbgrader/grading_view.py (plain JavaScript, no build).
// Every text from the server is set as text; only the server's sanitised HTML of answers,
// questions and model answers is set as HTML (and the page's policy runs no script of theirs).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { part: params.get("part"), view: null, given: new Set(), skip: [], dirty: false, replace: false };

function xsrf() {
  const found = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return found ? decodeURIComponent(found[1]) : "";
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-XSRFToken": xsrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const value = (response.headers.get("Content-Type") || "").includes("json") ? await response.json() : {};
  return { status: response.status, value };
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const grader = () => $("grader").value.trim();
const share = () => $("share").value.trim() || null;
const partPath = () => "api/part/" + state.part.split("/").map(encodeURIComponent).join("/");
const say = (text) => { $("message").textContent = text || ""; };
const fmt = (x) => (x > 0 ? "+" : "") + Number(x).toString();

// -- the list of parts ----------------------------------------------------------------------------

async function showParts() {
  $("parts").hidden = false;
  const { value } = await api("GET", "api/parts");
  if (!grader()) $("grader").value = value.grader || "";
  const rows = $("part-rows");
  rows.replaceChildren();
  for (const p of value.parts) {
    const tr = el("tr");
    const link = el("a", p.part);
    const key = [p.assignment, p.notebook, p.part].join("/");
    link.href = "?part=" + encodeURIComponent(key);
    const partCell = el("td");
    partCell.append(link);
    tr.append(el("td", p.assignment), el("td", p.notebook), partCell, el("td", String(p.points)),
      el("td", `${p.graded} / ${p.answers}`), el("td", String(p.no_response)));
    rows.append(tr);
  }
}

// -- one part -------------------------------------------------------------------------------------

function render() {
  const v = state.view;
  $("title").textContent = `${v.part.assignment} / ${v.part.notebook} / ${v.part.part} (${v.points} points)`;
  $("question").innerHTML = v.question_html;
  $("model").innerHTML = v.model_answer_html;
  $("scheme").innerHTML = v.scheme_html;
  const p = v.progress;
  $("progress").textContent = `graded ${p.graded} / ${p.answers} · left in your queue ${p.left_in_queue}` +
    (p.claimed_by_others ? ` · ${p.claimed_by_others} being graded by others` : "") +
    (p.no_response ? ` · ${p.no_response} "No response" skipped` : "");
  renderRubric();
  const a = v.answer;
  $("done").hidden = !!a;
  $("answer").hidden = !a;
  if (!a) {
    $("student").textContent = "";
    $("answer-status").textContent = "";
    $("identical").hidden = true;
    return;
  }
  $("student").textContent = a.student;
  $("answer").innerHTML = a.html;
  const status = $("answer-status");
  status.className = a.overridden ? "status-overridden" : a.graded ? "status-graded" : "";
  status.textContent = a.overridden
    ? `overridden in the formgrader: score ${a.score} (press o to replace it with the rubric's)`
    : a.no_response ? "No response" : a.graded ? `graded: ${a.score}` : "ungraded";
  const others = a.identical.filter((x) => !x.graded);
  $("identical").hidden = a.identical.length === 0;
  $("identical-count").textContent = String(others.length);
  $("identical-names").textContent = a.identical.length
    ? `Identical to ${a.identical.length} other answer(s): ${a.identical.map((x) => x.student).join(", ")}` : "";
  history.replaceState(null, "", "?part=" + encodeURIComponent(state.part) + "&student=" + encodeURIComponent(a.student));
}

function renderRubric() {
  const v = state.view;
  const list = $("rubric");
  list.replaceChildren();
  v.rubric.forEach((item, index) => {
    const li = el("li");
    li.dataset.id = item.id;
    li.className = (state.given.has(item.id) ? "given" : "") + (item.points < 0 ? " deduct" : "");
    li.append(el("span", (index < 9 ? `[${index + 1}] ` : "") , "key"), el("span", fmt(item.points), "points"), el("span", item.text));
    if (item.note) li.append(el("div", item.note, "note"));
    const edit = el("button", "edit"), up = el("button", "↑"), down = el("button", "↓"), del = el("button", "delete");
    edit.type = up.type = down.type = del.type = "button";
    edit.onclick = (e) => { e.stopPropagation(); editItem(item); };
    up.onclick = (e) => { e.stopPropagation(); changeRubric({ action: "move", id: item.id, to: index - 1 }); };
    down.onclick = (e) => { e.stopPropagation(); changeRubric({ action: "move", id: item.id, to: index + 1 }); };
    del.onclick = (e) => {
      e.stopPropagation();
      if (confirm(`Delete "${item.text}"? Every answer that had it is re-scored.`)) changeRubric({ action: "delete", id: item.id });
    };
    li.append(" ", edit, up, down, del);
    li.onclick = () => toggle(index);
    list.append(li);
  });
  const total = v.rubric.filter((i) => state.given.has(i.id)).reduce((s, i) => s + i.points, 0);
  $("score").textContent = `score ${Math.min(Math.max(total, 0), v.points)} / ${v.points}`;
}

function toggle(index) {
  const item = state.view.rubric[index];
  if (!item || !state.view.answer) return;
  if (state.given.has(item.id)) state.given.delete(item.id); else state.given.add(item.id);
  state.dirty = true;
  renderRubric();
}

async function load(student) {
  const query = new URLSearchParams({ grader: grader() });
  if (student) query.set("student", student);
  const { status, value } = student
    ? await api("GET", partPath() + "?" + query)
    : await api("POST", partPath(), { grader: grader(), share: share(), skip: state.skip });
  if (status !== 200) { say(value.message || `error ${status}`); return; }
  state.view = value;
  state.given = new Set(value.answer ? value.answer.items : []);
  $("comment").value = value.answer ? value.answer.comment : "";
  $("identical-too").checked = false;
  state.dirty = false;
  state.replace = false;
  render();
}

async function save() {
  const a = state.view && state.view.answer;
  if (!a) return;
  const answers = [{ student: a.student, version: a.version }];
  if ($("identical-too").checked) answers.push(...a.identical.filter((x) => !x.graded));
  const { status, value } = await api("POST", partPath() + "/grade", {
    grader: grader(), answers, items: [...state.given], comment: $("comment").value, replace_override: state.replace,
  });
  if (status === 409) {
    const first = Array.isArray(value.conflict) ? value.conflict[0] : value;
    say(first.why === "overridden"
      ? `${first.student}'s score was changed by hand in the formgrader; press o to replace it, n to leave it.`
      : first.why === "changed" ? "Another grader saved this answer meanwhile: it is shown again as they left it." : first.why);
    if (first.why === "changed" || first.why === "rubric") await load(a.student);
    return false;
  }
  if (status !== 200) { say(value.message || `error ${status}`); return false; }
  say("");
  return true;
}

async function saveAndNext() {
  if (await save()) { await load(null); say(""); }
}

async function changeRubric(change) {
  const { status, value } = await api("POST", partPath() + "/rubric", { grader: grader(), ...change });
  if (status !== 200) { say(value.why || value.message || `error ${status}`); }
  else {
    state.view.rubric = value.rubric;
    const ids = new Set(value.rubric.map((i) => i.id));
    state.given = new Set([...state.given].filter((i) => ids.has(i)));
    say(value.rescored !== undefined ? `re-scored ${value.rescored} answer(s)` +
      (value.kept_overridden ? `; ${value.kept_overridden} overridden in the formgrader kept their score` : "") : "");
    renderRubric();
    const a = state.view.answer;
    if (a && a.graded && (value.rescored || value.kept_overridden)) {  // its score was just written again
      const message = $("message").textContent;
      await load(a.student);
      say(message);
    }
  }
}

function editItem(item) {
  const points = prompt("Points (negative deducts)", String(item.points));
  if (points === null) return;
  const text = prompt("Text the student sees", item.text);
  if (text === null) return;
  const note = prompt("Note for graders", item.note);
  changeRubric({ action: "edit", id: item.id, points: Number(points), text, note: note || "" });
}

async function showStats() {
  const { value } = await api("GET", partPath() + "/stats");
  const box = $("stats");
  box.replaceChildren(el("h3", "Items given"));
  const items = el("ul");
  for (const i of value.items) items.append(el("li", `${i.count} × ${fmt(i.points)} ${i.text}`));
  box.append(items, el("h3", "Scores"));
  const dist = el("ul");
  for (const [score, count] of Object.entries(value.distribution)) dist.append(el("li", `${score}: ${count}`));
  box.append(dist, el("h3", "Identical answers across students"));
  const same = el("ul");
  for (const group of value.identical) same.append(el("li", group.join(", ")));
  if (!value.identical.length) same.append(el("li", "none"));
  box.append(same);
}

function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
}

document.addEventListener("keydown", (event) => {
  if (!state.view) return;
  if (typing(event.target)) {
    if (event.key === "Enter" && event.ctrlKey && event.target.id === "comment") { event.preventDefault(); saveAndNext(); }
    else if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.altKey || event.metaKey) return;
  if (/^[1-9]$/.test(event.key)) toggle(Number(event.key) - 1);
  else if (event.key === "Enter") saveAndNext();
  else if (event.key === "n") { if (state.view.answer) state.skip.push(state.view.answer.student); load(null); }
  else if (event.key === "c") $("comment").focus();
  else if (event.key === "i") $("identical-too").checked = !$("identical-too").checked;
  else if (event.key === "o") { state.replace = true; saveAndNext(); }
  else return;
  event.preventDefault();
});

$("save").onclick = saveAndNext;
$("skip").onclick = () => { if (state.view.answer) state.skip.push(state.view.answer.student); load(null); };
$("comment").addEventListener("input", () => { state.dirty = true; });
$("comment-to-item").onclick = () => {
  const text = $("comment").value.trim();
  const points = prompt("Points of the new item (negative deducts)", "0");
  if (!text || points === null) return;
  changeRubric({ action: "add", points: Number(points), text, note: "" }).then(() => {
    const added = state.view.rubric[state.view.rubric.length - 1];
    if (added) state.given.add(added.id);
    $("comment").value = "";
    renderRubric();
  });
};
$("add-item").onsubmit = (event) => {
  event.preventDefault();
  changeRubric({ action: "add", points: Number($("new-points").value), text: $("new-text").value, note: $("new-note").value });
  $("new-points").value = $("new-text").value = $("new-note").value = "";
};
$("stats-box").addEventListener("toggle", () => { if ($("stats-box").open) showStats(); });
$("grader").value = params.get("grader") || localStorage.getItem("tc-grader") || "";
$("share").value = params.get("share") || "";
$("grader").addEventListener("change", () => localStorage.setItem("tc-grader", grader()));

if (state.part) {
  $("grading").hidden = false;
  (async () => {
    if (!grader()) { const { value } = await api("GET", "api/parts"); $("grader").value = value.grader || ""; }
    await load(params.get("student"));
  })();
} else showParts();

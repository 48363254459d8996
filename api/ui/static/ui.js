// Shared by every page: the basket (kept in this browser), local times, the grid's keys.
"use strict";
const fm = (() => {
  const KEY = "fleetmine-basket";
  const basket = () => { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch { return []; } };
  const save = ids => { localStorage.setItem(KEY, JSON.stringify([...new Set(ids)])); render(); };
  const has = id => basket().includes(id);
  const add = ids => save([...basket(), ...ids]);
  const remove = id => save(basket().filter(x => x !== id));
  const clear = () => save([]);
  function render() {
    const n = basket().length, badge = document.getElementById("basket-count");
    if (badge) badge.textContent = String(n);
    document.querySelectorAll("button.add[data-clip]").forEach(b => {
      const inside = has(b.dataset.clip);
      b.classList.toggle("in", inside);
      b.textContent = inside ? "in basket (remove)" : "+ basket";
    });
    document.dispatchEvent(new CustomEvent("basket", {detail: basket()}));
  }
  function toggle(id) { has(id) ? remove(id) : add([id]); }
  // JSON from the API, or an Error whose message is the API's own ({"error": {"message"}}).
  async function api(method, url, body) {
    const r = await fetch(url, {method, headers: body ? {"content-type": "application/json"} : {},
      body: body ? JSON.stringify(body) : undefined, credentials: "same-origin"});
    let j = null;
    try { j = await r.json(); } catch { /* not JSON */ }
    if (!r.ok) {
      const msg = (j && j.error && j.error.message) || `HTTP ${r.status}`;
      const e = new Error(r.status === 401 ? `${msg}: sign in again` : msg); e.status = r.status; throw e;
    }
    return j;
  }
  return {basket, add, remove, clear, toggle, render, api};
})();

document.addEventListener("click", e => {
  const b = e.target.closest("button.add[data-clip]");
  if (b) { e.preventDefault(); fm.toggle(b.dataset.clip); }
});

function countLoaded() {  // how many thumbnails decoded: tests and slow links read it
  const imgs = [...document.querySelectorAll("img")];
  const mark = () => { document.body.dataset.loaded = String(imgs.filter(i => i.complete && i.naturalWidth > 0).length); };
  imgs.forEach(i => { i.addEventListener("load", mark); i.addEventListener("error", () => {
    i.closest(".card")?.classList.add("broken"); mark(); }); });
  mark();
}

function localTimes() {
  // The browser's own zone, named: "local" alone would not say whose.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "this browser's zone";
  document.querySelectorAll(".local[data-utc]").forEach(s => {
    const d = new Date(s.dataset.utc);
    s.textContent = `(${d.toLocaleString()} ${zone})`;
  });
}

function gridKeys() {
  const cards = () => [...document.querySelectorAll("#grid .card")];
  let at = -1;
  const pick = i => {
    const all = cards(); if (!all.length) return;
    at = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((c, j) => c.classList.toggle("sel", j === at));
    all[at].focus({preventScroll: true}); all[at].scrollIntoView({block: "nearest"});
    document.body.dataset.selected = all[at].dataset.clip;
  };
  document.addEventListener("keydown", e => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const all = cards();
    if (e.key === "j") pick(at + 1);
    else if (e.key === "k") pick(at - 1);
    else if (e.key === "Enter" && at >= 0) location.href = all[at].querySelector("a").href;
    else if (e.key === "b" && at >= 0) fm.toggle(all[at].dataset.clip);
    else if (e.key === "n" && document.getElementById("next")) location.href = document.getElementById("next").href;
    else return;
    e.preventDefault();
  });
  const addPage = document.getElementById("add-page");
  if (addPage) addPage.addEventListener("click", () => fm.add(cards().map(c => c.dataset.clip)));
}

document.addEventListener("DOMContentLoaded", () => {
  fm.render(); countLoaded(); localTimes();
  if (document.body.dataset.page === "grid") gridKeys();
  window.addEventListener("storage", fm.render);  // another tab changed the basket
});

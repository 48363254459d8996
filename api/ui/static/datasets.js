// Basket -> dataset version -> export (a job an operator can watch) -> manifest URL.
"use strict";
(() => {
  const role = document.body.dataset.role;
  const out = id => document.getElementById(id);
  function showBasket() {
    const ids = fm.basket(), box = out("basket");
    out("basket-empty").hidden = ids.length > 0;
    box.replaceChildren(...ids.map(id => {
      const c = document.createElement("div"); c.className = "card"; c.dataset.clip = id;
      const a = document.createElement("a"); a.href = `/ui/clips/${encodeURIComponent(id)}`;
      const img = document.createElement("img"); img.src = `/v1/clips/${encodeURIComponent(id)}/thumbnail.jpg`;
      img.alt = `clip ${id}`; img.width = 320; img.height = 180; a.appendChild(img);
      const cap = document.createElement("div"); cap.className = "cap"; cap.textContent = id;
      const rm = document.createElement("button"); rm.className = "add in"; rm.dataset.clip = id;
      rm.textContent = "in basket (remove)";
      c.append(a, cap, rm); return c;
    }));
  }
  document.addEventListener("basket", showBasket);
  showBasket();
  out("basket-clear").addEventListener("click", () => fm.clear());

  const sleep = ms => new Promise(r => setTimeout(r, ms));
  async function watch(jobId) {
    for (;;) {
      const j = await fm.api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
      out("job").textContent = `export job ${j.id}: ${j.status}` + (j.result && j.result.shards !== undefined ? `, ${j.result.shards} shards, ${j.result.num_samples} samples` : "");
      out("job").dataset.status = j.status;
      if (!["submitted", "running"].includes(j.status)) {
        if (j.status !== "succeeded") throw new Error(`the export job ${j.status}: ${j.error || "see fleetmine jobs logs " + j.id}`);
        return;
      }
      await sleep(500);
    }
  }
  function showManifest(v) {
    const line = out("manifest-line"); line.replaceChildren();
    const a = document.createElement("a"); a.id = "manifest"; a.href = v.manifest_url; a.textContent = v.manifest_url;
    line.append("manifest: ", a, " (training jobs fetch it with their bearer token)");
  }
  out("builder").addEventListener("submit", async e => {
    e.preventDefault();
    const f = new FormData(e.target), name = f.get("name");
    let query;
    if (f.get("source") === "basket") {
      const ids = fm.basket();
      if (!ids.length) { out("result").textContent = "The basket is empty: add clips first, or pick 'this query'."; return; }
      query = {clip_ids: ids};
    } else {
      try { query = JSON.parse(f.get("query") || "{}"); }
      catch (err) { out("result").textContent = `The query is not JSON: ${err.message}`; return; }
    }
    const viaJob = role === "operator";
    out("result").textContent = "creating..."; out("job").textContent = ""; out("manifest-line").replaceChildren();
    out("create").disabled = true;
    try {
      const v = await fm.api("POST", "/v1/datasets", {name, query, export: !viaJob});
      out("result").textContent = `${v.name}@${v.version}: ${v.clip_count} clips, ${v.state}`;
      if (viaJob) {
        const job = await fm.api("POST", "/v1/jobs", {kind: "export", params: {name: v.name, version: v.version}});
        out("job").textContent = `export job ${job.id}: ${job.status}`;
        await watch(job.id);
        showManifest(await fm.api("GET", `/v1/datasets/${encodeURIComponent(v.name)}/versions/${v.version}`));
      } else {
        showManifest(v);
      }
      out("result").textContent = `${v.name}@${v.version}: ${v.clip_count} clips, exported`;
    } catch (err) {
      out("result").textContent = `Not created: ${err.message}`; out("result").className = "error";
    } finally {
      out("create").disabled = false;
    }
  });
})();

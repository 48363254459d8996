// "Find more like this frame": an image (the clip page's video frame at its current time,
// or a JPEG/PNG picked on the grid) posted to /v1/search/similar as a multipart upload;
// the clips whose frames look most like it are shown as cards.
"use strict";
(() => {
  const K = 12;

  function card(hit) {
    const id = hit.clip_id, href = `/ui/clips/${encodeURIComponent(id)}`;
    const div = document.createElement("div");
    div.className = "card"; div.dataset.clip = id; div.dataset.distance = String(hit.distance);
    const a = document.createElement("a"); a.href = href;
    const img = document.createElement("img");
    img.alt = `clip ${id}`; img.width = 320; img.height = 180; img.src = `/v1/clips/${encodeURIComponent(id)}/thumbnail.jpg`;
    a.appendChild(img);
    const cap = document.createElement("div"); cap.className = "cap"; cap.textContent = `distance ${hit.distance.toFixed(3)}`;
    const add = document.createElement("button"); add.className = "add"; add.dataset.clip = id; add.textContent = "+ basket";
    div.append(a, cap, add);
    return div;
  }

  async function search(blob, name) {
    const target = document.getElementById("frame-similar"), status = document.getElementById("frame-status");
    const form = new FormData();
    window.fmFrameQuery = blob;  // the image last searched for (tests read it back)
    form.append("image", blob, name);
    form.append("k", String(K));
    document.getElementById("frame-search").hidden = false;  // empty until asked: no bare heading
    status.className = "muted"; status.textContent = "searching...";
    target.replaceChildren(); delete document.body.dataset.frameResults;
    try {
      const r = await fetch("/v1/search/similar", {method: "POST", body: form, credentials: "same-origin"});
      let j = null;
      try { j = await r.json(); } catch { /* not JSON */ }
      if (!r.ok) throw new Error((j && j.error && j.error.message) || `HTTP ${r.status}`);
      target.append(...j.data.map(card));
      status.textContent = `${j.count} clips whose frames look most like it, nearest first`;
      fm.render(); countLoaded();
      document.body.dataset.frameResults = String(j.count);
    } catch (err) {
      status.className = "error"; status.textContent = `search failed: ${err.message}`;
      document.body.dataset.frameResults = "error";
    }
  }

  // The frame the video shows now, at its own resolution, as a JPEG.
  function grab(video) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise((ok, fail) => canvas.toBlob(b => (b ? ok(b) : fail(new Error("no frame"))), "image/jpeg", 0.92));
  }

  const button = document.getElementById("find-frame");
  if (button) button.addEventListener("click", async () => {
    const video = document.getElementById("video"), status = document.getElementById("frame-status");
    if (!video || video.readyState < 2 || !video.videoWidth) {
      document.getElementById("frame-search").hidden = false;
      status.className = "error"; status.textContent = "the video shows no frame yet: wait for it to load"; return;
    }
    video.pause();
    const t = video.currentTime.toFixed(2);
    document.getElementById("frame-at").textContent = `at ${t} s`;
    search(await grab(video), `frame-${t}.jpg`);
  });
  const upload = document.getElementById("find-image");
  if (upload) upload.addEventListener("change", () => { if (upload.files.length) search(upload.files[0], upload.files[0].name); });
})();

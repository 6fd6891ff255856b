// tracemill report: the search-tree viewer. Vanilla JS over the JSON embedded in the page.
// A problem's JSON is parsed only when the problem is opened, and a node's children are put into the DOM
// only when the node is opened (CHUNK at a time), so trees of thousands of nodes stay responsive.
"use strict";
(() => {
  const CHUNK = 200; // children rendered per click on "show more"
  const AUTO_OPEN = 150; // rows rendered breadth-first when a problem is shown
  const C = { parent: 0, text: 1, value: 2, n: 3, nCorrect: 4, terminal: 5, answer: 6, outcome: 7,
    origin: 8, labels: 9, wrong: 10 };
  const trees = new Map(); // problem index -> parsed tree with children lists
  let view = null; // the problem on screen: {tree, els, shown}

  function load(k) {
    if (!trees.has(k)) {
      const tree = JSON.parse(document.getElementById(`tree-data-${k}`).textContent);
      tree.children = tree.nodes.map(() => []);
      tree.position = new Array(tree.nodes.length).fill(0);
      tree.nodes.forEach((node, i) => {
        if (i > 0) {
          const kids = tree.children[node[C.parent]];
          tree.position[i] = kids.length;
          kids.push(i);
        }
      });
      trees.set(k, tree);
    }
    return trees.get(k);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function colour(value) {
    return value === null ? "#e6e6e6" : `hsl(${Math.round(120 * value)}, ${70 - 15 * value}%, ${85 - 5 * value}%)`;
  }

  function badges(node) {
    const box = el("span", "badges");
    if (node[C.n] > 0) box.append(el("span", "badge", `v=${node[C.value].toFixed(2)} (${node[C.nCorrect]}/${node[C.n]} rollouts)`));
    for (const [strategy, hard, soft, source] of node[C.labels]) {
      const b = el("span", `badge ${hard ? "good" : "bad"}`, `${hard ? "good" : "bad"} ${soft === null ? "" : soft.toFixed(2)} · ${source} · ${strategy}`);
      box.append(b);
    }
    if (node[C.terminal]) box.append(el("span", `badge ${node[C.outcome] ? "good" : "bad"}`, `answer ${node[C.answer]} ${node[C.outcome] ? "✓" : "✗"}`));
    if (node[C.origin] !== "sample" && node[C.origin] !== "root") box.append(el("span", "badge", node[C.origin]));
    return box;
  }

  function nodeElement(i) {
    const { tree } = view;
    const node = tree.nodes[i];
    const wrap = el("div", "node");
    wrap.dataset.index = i;
    const row = el("div", "row");
    row.style.background = colour(node[C.value]);
    const kids = tree.children[i];
    const toggle = el("span", kids.length ? "toggle" : "toggle leaf", kids.length ? "▸" : "·");
    toggle.title = `${kids.length} children`;
    const text = el("span", "text", i === 0 ? "(question)" : node[C.text]);
    for (const claim of node[C.wrong]) text.append(el("span", "claim", `wrong claim: ${claim}`));
    row.append(toggle, text, badges(node));
    const box = el("div", "kids");
    wrap.append(row, box);
    view.els[i] = { wrap, row, toggle, box };
    if (kids.length) toggle.addEventListener("click", () => (view.open.has(i) ? close(i) : open(i)));
    return wrap;
  }

  function open(i, atLeast = 0) {
    const kids = view.tree.children[i];
    const e = view.els[i];
    view.open.add(i);
    e.toggle.textContent = "▾";
    e.box.hidden = false;
    const shown = view.shown[i] || 0;
    const upTo = Math.min(kids.length, Math.max(shown + (shown ? 0 : CHUNK), atLeast));
    if (upTo > shown) {
      e.box.querySelector(":scope > .more")?.remove();
      const frag = document.createDocumentFragment();
      for (let p = shown; p < upTo; p++) frag.append(nodeElement(kids[p]));
      e.box.append(frag);
      view.shown[i] = upTo;
      if (upTo < kids.length) {
        const more = el("button", "more", `show ${Math.min(CHUNK, kids.length - upTo)} more of ${kids.length - upTo}`);
        more.addEventListener("click", () => open(i, view.shown[i] + CHUNK));
        e.box.append(more);
      }
    }
  }

  function close(i) {
    view.open.delete(i);
    view.els[i].toggle.textContent = "▸";
    view.els[i].box.hidden = true;
  }

  function markPath(path) {
    view.panel.querySelectorAll(".row.hl").forEach((r) => r.classList.remove("hl"));
    const { tree } = view;
    for (const i of path) {
      const chain = [];
      for (let a = tree.nodes[i][C.parent]; a >= 0; a = tree.nodes[a][C.parent]) chain.push(a);
      for (const a of chain.reverse()) {
        const child = a === chain[chain.length - 1] ? i : chain[chain.indexOf(a) + 1];
        open(a, tree.position[child] + 1);
      }
      view.els[i].row.classList.add("hl");
    }
    if (path.length) view.els[path[path.length - 1]].row.scrollIntoView({ block: "nearest" });
  }

  function pathButtons(title, items, label) {
    const box = el("div", "paths");
    if (!items.length) return box;
    box.append(el("span", "", title));
    for (const item of items) {
      const b = el("button", item.correct === false ? "bad" : "ok", label(item));
      b.addEventListener("click", () => markPath(item.path));
      box.append(b);
    }
    return box;
  }

  function showProblem(k, button) {
    document.querySelectorAll(".problem.active").forEach((b) => b.classList.remove("active"));
    button.classList.add("active");
    const tree = load(k);
    const panel = document.getElementById("tree-panel");
    panel.replaceChildren();
    view = { tree, panel, els: [], shown: [], open: new Set() };
    panel.append(el("div", "question", `${tree.question}\n\ngold answer: ${tree.gold}   (problem ${tree.id})`));
    panel.append(pathButtons("solutions:", tree.solutions, (s) =>
      `#${s.index} ${s.answer ?? "no answer"} ${s.correct ? "✓" : "✗"} · ${s.n_tokens} tok · first error ${s.first_error ?? "?"}`));
    panel.append(pathButtons("traces:", tree.traces, (t) =>
      `${t.kind} · ${t.n_tokens} tok${t.length_ratio === null ? "" : ` · ×${t.length_ratio.toFixed(2)}`}`));
    const root = nodeElement(0);
    root.classList.add("root");
    panel.append(root);
    const queue = [0];
    let rendered = 1;
    while (queue.length && rendered < AUTO_OPEN) {
      const i = queue.shift();
      if (!tree.children[i].length) continue;
      open(i);
      rendered += view.shown[i];
      queue.push(...tree.children[i].slice(0, view.shown[i]));
    }
  }

  document.querySelectorAll(".problem").forEach((b) =>
    b.addEventListener("click", () => showProblem(Number(b.dataset.index), b)));
  document.getElementById("problem-filter")?.addEventListener("input", (ev) => {
    const q = ev.target.value.toLowerCase();
    document.querySelectorAll("#problem-list > li").forEach((li) => {
      li.hidden = q !== "" && !li.textContent.toLowerCase().includes(q) && !(li.firstElementChild?.title || "").includes(q);
    });
  });
})();

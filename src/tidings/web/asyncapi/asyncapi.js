// Renders the hub's AsyncAPI document (fetched from the same server; no CDN): channels, messages with their
// JSON Schema, namespaces and the close-code table.
(function () {
  "use strict";
  const root = document.getElementById("doc");
  const specUrl = document.querySelector("meta[name=asyncapi-url]")?.content || "../asyncapi.json";
  document.getElementById("raw").href = specUrl;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
    return node;
  }

  function table(headers, rows) {
    return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))));
  }

  function resolve(doc, ref) {
    return ref.replace(/^#\//, "").split("/").reduce((node, part) => (node ? node[part] : undefined), doc);
  }

  function render(doc) {
    document.getElementById("title").textContent = `${doc.info?.title || "Tidings"} WebSocket protocol`;
    document.getElementById("info").textContent = `AsyncAPI ${doc.asyncapi}, version ${doc.info?.version || "?"}`;
    root.replaceChildren();

    root.append(el("h2", {}, "Channels"));
    root.append(table(["channel", "address", "description"], Object.entries(doc.channels || {}).map(
      ([name, ch]) => [el("code", {}, name), el("code", {}, ch.address || ""), ch.description || ""])));

    root.append(el("h2", {}, "Authentication"));
    root.append(table(["scheme", "where", "description"], Object.entries(doc.components?.securitySchemes || {}).map(
      ([name, s]) => [name, s.in ? `${s.in}: ${s.name}` : `${s.type} ${s.scheme || ""}`, s.description || ""])));

    root.append(el("h2", {}, "Messages"));
    const schemas = doc.components?.schemas || {};
    for (const [key, msg] of Object.entries(doc.components?.messages || {})) {
      const payload = msg.payload?.$ref ? resolve(doc, msg.payload.$ref) : msg.payload;
      const box = el("details", { class: "message", "data-message": msg.name || key },
        el("summary", {}, el("code", {}, msg.name || key), " ",
          el("span", { class: "dir" }, key.startsWith("client.") ? "client → server" : "server → client"),
          " — ", msg.summary || ""),
        el("pre", {}, JSON.stringify(payload ?? {}, null, 2)));
      root.append(box);
    }
    if (Object.keys(schemas).length) root.append(el("p", { class: "dir" }, `${Object.keys(schemas).length} schemas in components/schemas.`));

    const namespaces = doc["x-tidings-namespaces"];
    if (namespaces && Object.keys(namespaces).length) {
      root.append(el("h2", {}, "Namespaces"));
      root.append(el("pre", {}, JSON.stringify(namespaces, null, 2)));
    }

    root.append(el("h2", {}, "Close codes"));
    root.append(table(["code", "name", "action", "meaning"], (doc["x-tidings-close-codes"] || []).map(
      (c) => [el("code", {}, c.code), c.name, c.action + (c.signIn ? " (sign in again)" : ""), c.meaning])));
    const ranges = doc["x-tidings-close-ranges"] || [];
    if (ranges.length) root.append(table(["range", "action", "meaning"],
      ranges.map((r) => [`${r.first}–${r.last}`, r.action, r.meaning])));
    root.dataset.ready = "true";
  }

  fetch(specUrl, { headers: { Accept: "application/json" } })
    .then((r) => { if (!r.ok) throw new Error(`${specUrl}: HTTP ${r.status}`); return r.json(); })
    .then(render)
    .catch((err) => { root.textContent = `Could not load the AsyncAPI document: ${err.message}`; root.dataset.ready = "error"; });
})();

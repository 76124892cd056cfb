// Copies the browser libraries that come from the npm registry into static/vendor/,
// so pages never load them from a CDN and their versions follow package-lock.json.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "static", "vendor");
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js"],
  ["htmx-ext-ws/dist/ws.min.js", "htmx-ext-ws.min.js"],
];

fs.mkdirSync(out, { recursive: true });
for (const [from, to] of files) {
  fs.copyFileSync(path.join(root, "node_modules", from), path.join(out, to));
  console.log(`static/vendor/${to} <- node_modules/${from}`);
}

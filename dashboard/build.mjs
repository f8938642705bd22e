// Builds the dashboard into the collector's package (collector/web/static): one script and
// one stylesheet, named by their content's hash so they can be cached for good, and the page
// that names them. Nothing is fetched at run time.
import { build } from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, "..", "collector", "web", "static");
await rm(out, { recursive: true, force: true });
await mkdir(path.join(out, "assets"), { recursive: true });

const result = await build({
  entryPoints: { main: path.join(here, "src", "main.ts"), style: path.join(here, "src", "style.css") },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  entryNames: "[name]-[hash]",
  outdir: path.join(out, "assets"),
  metafile: true,
  legalComments: "eof",
  logLevel: "warning",
});

const names = {};
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  if (output.entryPoint === undefined) continue;
  names[path.extname(file)] = path.basename(file);
}
let page = await readFile(path.join(here, "index.html"), "utf8");
page = page
  .replace("assets/main.css", `assets/${names[".css"]}`)
  .replace("assets/main.js", `assets/${names[".js"]}`);
await writeFile(path.join(out, "index.html"), page);
console.log(`dashboard built into ${path.relative(process.cwd(), out)}: ${Object.values(names).join(", ")}`);

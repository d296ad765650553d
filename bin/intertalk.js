#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli/main.ts by `npm install` (prepare → tsc).
import('../dist/src/cli/main.js').then((m) => m.main(process.argv.slice(2))).catch((err) => {
  console.error(err?.message ?? err);
  process.exit(1);
});

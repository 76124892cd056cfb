// Compiles contracts/src (and contracts/test) with solc-js into contracts/artifacts/.
// Output is deterministic (sorted keys, no metadata hash), so a check can recompile and
// compare byte for byte:  node contracts/compile.js [--check] [--out DIR]
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const args = process.argv.slice(2);
const check = args.includes("--check");
const outIndex = args.indexOf("--out");
const outDir = outIndex >= 0 ? path.resolve(args[outIndex + 1]) : path.join(__dirname, "artifacts");

const sources = {};
for (const dir of ["src", "test"]) {
  const full = path.join(__dirname, dir);
  if (!fs.existsSync(full)) continue;
  for (const name of fs.readdirSync(full).sort()) {
    if (name.endsWith(".sol")) {
      sources[`${dir}/${name}`] = { content: fs.readFileSync(path.join(full, name), "utf8") };
    }
  }
}

function findImports(importPath) {
  for (const base of [path.join(root, "node_modules"), __dirname]) {
    const candidate = path.join(base, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `not found: ${importPath}` };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

let differs = false;
fs.mkdirSync(outDir, { recursive: true });
for (const file of Object.keys(output.contracts).sort().filter((f) => f in sources)) {
  for (const [name, c] of Object.entries(output.contracts[file])) {
    if (!c.evm.bytecode.object) continue; // interfaces have no code to deploy
    const artifact = sortKeys({
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      compiler: solc.version(),
      contractName: name,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      source: file,
    });
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const target = path.join(outDir, `${name}.json`);
    if (check) {
      const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : null;
      if (current !== text) {
        console.error(`${path.relative(root, target)} differs from its source`);
        differs = true;
      }
    } else {
      fs.writeFileSync(target, text);
      console.log(`${path.relative(root, target)}`);
    }
  }
}
if (differs) {
  console.error("run `make contracts` and commit contracts/artifacts/");
  process.exit(1);
}

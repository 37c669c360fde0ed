// Runs a wasm32-wasi program under node's WASI (make test-wasm):
//   node --experimental-wasi-unstable-preview1 tests/wasi_run.mjs PROGRAM.wasm [ARGS...]
// The current directory (the repository) is preopened as "." so the tests'
// relative paths (build/..., tests/data/..., examples/data/...) resolve as
// they do natively; nothing else of the host file system is visible. The
// program's exit status becomes node's.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [program, ...args] = process.argv.slice(2);
if (!program) {
    console.error('usage: wasi_run.mjs PROGRAM.wasm [ARGS...]');
    process.exit(2);
}
const options = {
    args: [program, ...args],
    env: { LSAE_WASI: '1' },
    preopens: { '.': process.cwd() },
    returnOnExit: true,
};
// node 20 wants the WASI version named; Debian 12's node 18 knows the option too
options.version = 'preview1';
const wasi = new WASI(options);
const module = await WebAssembly.compile(await readFile(program));
const instance = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: wasi.wasiImport });
process.exitCode = wasi.start(instance);

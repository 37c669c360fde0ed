#!/usr/bin/env python3
"""latentsae benchmarks against PyTorch, one command: `make bench` (or
python3 bench/run.py). Builds bench/bench.c twice (-march=native, and
-mavx2 -mfma as on the issue's AVX2-only reference machine), then runs our
step and the PyTorch step (bench/torch_bench.py, tests/torch_ref.py's step in
float32) side by side, interleaved, ROUNDS times, and prints medians as a
markdown table. Ratios are taken within a round (ours and PyTorch's measured
back to back) and the median ratio is reported, since the machine may be
shared.

Options: --threads N (2), --rounds R (3), --quick (fewer configurations),
--gather (also time tests/torch_ref.py's gather decoder, which is slow),
--variants (only this: a training step of each SAE type of docs/math.md,
section 3, against TopK in the same run, d 768, L 24576, k 32, B 1024;
needs neither PyTorch nor OpenBLAS).
Environment: CC (cc), PYTHON for torch (this interpreter)."""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "benchmarks")


def sh(cmd, env=None):
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(f"failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        sys.exit(1)
    return r.stdout


def parse(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                out[parts[0]] = parts[1]
    return out


def build(cc):
    os.makedirs(OUT, exist_ok=True)
    have_cblas = subprocess.run([cc, "-x", "c", "-", "-lopenblas", "-o", os.devnull], input="#include <cblas.h>\nint main(void){return 0;}\n",
                                text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    bins = {}
    for name, arch in (("native", ["-march=native"]), ("avx2", ["-mavx2", "-mfma"])):
        exe = os.path.join(OUT, f"bench_{name}")
        cmd = [cc, "-std=c99", "-O2", *arch, "-fopenmp", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", exe, "bench/bench.c", "-lm"]
        if have_cblas:
            cmd[2:2] = ["-DLSAE_BENCH_CBLAS"]
            cmd += ["-lopenblas"]
        sh(cmd)
        bins[name] = exe
    return bins, have_cblas


def build_avxvnni(cc):
    """The AVX2 build with AVX-VNNI (-mavx2 -mfma -mavxvnni: Intel's client
    CPUs since Alder Lake and Zen 5 have it without AVX-512), for the
    pre-pass tables only; None where this CPU or compiler lacks it."""
    try:
        if " avx_vnni" not in open("/proc/cpuinfo").read():
            return None
    except OSError:
        return None
    exe = os.path.join(OUT, "bench_avxvnni")
    cmd = [cc, "-std=c99", "-O2", "-mavx2", "-mfma", "-mavxvnni", "-fopenmp", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", exe, "bench/bench.c", "-lm"]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        return None
    return exe


BUILD_NAMES = {"native": "-march=native", "avx2": "-mavx2 -mfma (forced)", "avxvnni": "-mavx2 -mfma -mavxvnni (forced)"}


def machine():
    model, cores = platform.processor() or "?", os.cpu_count()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "SSE"
    except OSError:
        isa = "?"
    return f"{model}, {cores} logical CPUs, {isa}"


VARIANTS = [("topk", "TopK (the reference)"), ("batchtopk", "BatchTopK"), ("batchtopk_cap", "BatchTopK, row cap"),
            ("matryoshka_nested", "Matryoshka nested, 4 levels, TopK selection"),
            ("matryoshka_nested_bt", "Matryoshka nested, 4 levels, BatchTopK selection"),
            ("matryoshka_per_level", "Matryoshka per-level, 4 levels, k_j = 8, 16, 24, 32"),
            ("matryoshka_per_level_bt", "Matryoshka per-level, 4 levels, batch-wide"),
            ("topk_k_anneal_start", "TopK, k_anneal, an early step (k_s near 4k)")]


def variants(a, cc):
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(OUT, "bench_native")
    sh([cc, "-std=c99", "-O2", "-march=native", "-fopenmp", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", exe, "bench/bench.c", "-lm"])
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    d, L, k, B = 768, 24576, 32, 1024
    r = parse(sh([exe, "variants", str(d), str(L), str(k), str(B), str(a.rounds)], env))
    print(f"Machine: {machine()}. Threads: {a.threads}. d {d}, L {L}, k {k}, B {B}, one optimizer step a batch; "
          f"{a.rounds} rounds, each running every type once after a warm-up step; medians.")
    print()
    print("| SAE type | step, ms | time / TopK's (median of per-round ratios) | k_s | rows enlarged |")
    print("|---|---|---|---|---|")
    for key, desc in VARIANTS:
        print(f"| {desc} | {r['step_ms_' + key]:.0f} | {r['ratio_' + key]:.2f} | {int(r['k_' + key])} | {int(r['enlarged_' + key])} |")
    return 0


def prepass(a, bins, env):
    """The int8 pre-pass of encode (docs/math.md 2.12) against the float32
    pass, in the same process and round, on with lsae_model_set_encode_prepass(m, 2)
    in both builds; the -mavx2 build (AVX2's vpmaddubsw kernel) stands in for an
    AVX2-only machine, where the default turns it on for d L >= 2^22, as with VNNI."""
    npy = "examples/data/embeddings/data-00000.npy"
    configs = [("nomic 768, x32, k 32 (random init)", 768, 24576, 32, 512, []),
               ("MiniLM 384, x8, k 32 (random init)", 384, 3072, 32, 2048, []),
               ("MiniLM 384, x32, k 32 (random init)", 384, 12288, 32, 1024, []),
               ("MiniLM 384, x8, k 32, trained 300 steps on examples/data", 384, 3072, 32, 2048, [npy, 300])]
    rows = []
    vn = build_avxvnni(os.environ.get("CC", "cc"))
    builds = dict(bins, avxvnni=vn) if vn else bins
    for name, d, L, k, B, extra in configs:
        per = {isa: [] for isa in builds}
        for _ in range(a.rounds):
            for isa in builds:
                per[isa].append(parse(sh([builds[isa], "prepass", str(d), str(L), str(k), str(B), "3", *map(str, extra)], env)))
        rows.append((name, per))
        print(f"prepass {name}: " + ", ".join(f"{isa} {statistics.median(x['encode_prepass_speedup'] for x in v):.2f}x" for isa, v in per.items()), flush=True)
    print()
    print("Encode with the int8 pre-pass (exact: the same bits as float32), samples/s, and one row's latency:")
    print()
    print("| configuration | build | float32 | pre-pass | speed-up | one row: float32 / pre-pass | recomputed latents a row: mean, p99 | bit-identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name, per in rows:
        for isa, v in per.items():
            med = lambda key: statistics.median(x[key] for x in v)
            same = all(x["prepass_bit_identical"] == 1 and x["one_row_bit_identical"] == 1 for x in v)
            print(f"| {name} | {BUILD_NAMES[isa]}{' VNNI' if v[0]['vnni'] == 1 else ''}{' AMX' if v[0].get('amx') == 1 else ''} | "
                  f"{med('encode_fp32_samples_per_s'):.0f} | {med('encode_prepass_samples_per_s'):.0f} | {med('encode_prepass_speedup'):.2f}x | "
                  f"{med('one_row_fp32_us'):.0f} / {med('one_row_prepass_us'):.0f} us | {med('candidates_mean'):.0f}, {med('candidates_p99'):.0f} | "
                  f"{'yes' if same else 'NO'} |")
    print()
    print("Pre-pass: the model's kept int8 copy of W_enc (lsae_model_load keeps one). Speed-up: median of per-round ratios. "
          "Recomputed latents: those the int8 bound could not rule out, recomputed in float32.")
    return 0


def trainpp(a, bins, env):
    """The training step with its selection through the int8 pre-pass
    against the float32 selection (bench trainpp: two trainers of the same
    model stepped in turn on the same batches; the weights must stay the
    same bits). The -march=native build, and at the headline shape the
    -mavx2 builds (with and without AVX-VNNI), stand-ins for CPUs without
    AVX-512: the pre-pass is used where lsae__lp_applies finds it faster."""
    npy = "examples/data/embeddings/data-00000.npy"
    vn = build_avxvnni(os.environ.get("CC", "cc"))
    configs = [("nomic 768, x32, k 64, batch 512, no dead", 768, 24576, 64, 512, 0.0, []),
               ("nomic 768, x32, k 64, batch 512, 25% dead (AuxK)", 768, 24576, 64, 512, 0.25, []),
               ("nomic 768, x32, k 64, batch 512, no dead, 4 batches a step", 768, 24576, 64, 512, 0.0, ["-", "4"]),
               ("nomic 768, x32, k 64, batch 512, 25% dead (AuxK), 4 batches a step", 768, 24576, 64, 512, 0.25, ["-", "4"]),
               ("nomic 768, x32, k 32, batch 1024, no dead", 768, 24576, 32, 1024, 0.0, []),
               ("MiniLM 384, x32, k 32, batch 1024, examples/data", 384, 12288, 32, 1024, 0.0, [npy])]
    # the AVX2 builds (stand-ins for CPUs without AVX-512) at the headline shape
    configs = [(n, d, L, k, B, dead, extra, "native") for n, d, L, k, B, dead, extra in configs]
    configs.append(("nomic 768, x32, k 64, batch 512, no dead, 4 batches a step; -mavx2 -mfma (forced)", 768, 24576, 64, 512, 0.0, ["-", "4"], "avx2"))
    if vn:
        configs.append(("nomic 768, x32, k 64, batch 512, no dead, 4 batches a step; -mavx2 -mfma -mavxvnni (forced)", 768, 24576, 64, 512, 0.0, ["-", "4"], vn))
    print()
    amx = parse(sh([bins["native"], "trainpp", "64", "256", "8", "64", "0", "1"], env)).get("amx") == 1
    print("Training step with the int8 pre-pass (the same bits as float32), -march=native unless named"
          f"{' (int8 product on AMX tiles)' if amx else ''}, samples/s:")
    print()
    print("| configuration | float32 | pre-pass | speed-up (wall) | speed-up (CPU time) | recomputed latents a row: mean, most | bit-identical |")
    print("|---|---|---|---|---|---|---|")
    for name, d, L, k, B, dead, extra, exe in configs:
        exe = bins.get(exe, exe)
        v = [parse(sh([exe, "trainpp", str(d), str(L), str(k), str(B), str(dead), "6", *extra], env)) for _ in range(a.rounds)]
        med = lambda key: statistics.median(x[key] for x in v)
        same = all(x["train_prepass_bit_identical"] == 1 for x in v)
        print(f"| {name} | {med('train_fp32_samples_per_s'):.0f} | {med('train_prepass_samples_per_s'):.0f} | {med('train_prepass_speedup'):.2f}x | "
              f"{med('train_prepass_cpu_speedup'):.2f}x | {med('train_candidates_mean'):.0f}, {med('train_candidates_max'):.0f} | {'yes' if same else 'NO'} |", flush=True)
    print()
    print("Each round: 7 steps of each trainer, interleaved, the first not timed (one batch a step, or 4 as the training table "
          "above takes them); medians of the rounds. CPU time: the process's, which other processes disturb less than wall time.")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gather", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--prepass", action="store_true", help="only the encode pre-pass table (no PyTorch needed)")
    ap.add_argument("--trainpp", action="store_true", help="only the training step with and without the pre-pass (no PyTorch needed)")
    a = ap.parse_args()
    cc = os.environ.get("CC", "cc")
    if a.variants:
        return variants(a, cc)
    if a.trainpp:
        bins, _ = build(cc)
        print(f"machine: {machine()}; {a.threads} threads; {a.rounds} rounds, medians", flush=True)
        return trainpp(a, bins, dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
    if a.prepass:
        bins, _ = build(cc)
        print(f"machine: {machine()}; {a.threads} threads; {a.rounds} rounds, medians", flush=True)
        return prepass(a, bins, dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
    py = os.environ.get("PYTHON", sys.executable)
    bins, have_cblas = build(cc)
    # a speed-up is only a speed-up against an optimised baseline: refuse to
    # print ratios against the reference BLAS or without OpenBLAS to compare
    # the GEMM with (make bench installs both: tests/install-deps.sh --bench)
    out = sh([py, "bench/torch_bench.py", "blas"])
    blas = parse(out)
    blas_desc = next((line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("blas_desc ")), "?")
    if blas.get("blas_ok") != 1:
        sys.stderr.write(f"bench: PyTorch and numpy run on {blas_desc}: no ratio against them would mean anything. "
                         "Install OpenBLAS (apt-get install libopenblas0; make bench does) and run again.\n")
        return 1
    if not have_cblas:
        sys.stderr.write("bench: no OpenBLAS to compare the GEMM with (cblas.h and -lopenblas): apt-get install libopenblas-dev "
                         "(make bench does) and run again.\n")
        return 1
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    T = str(a.threads)

    # the AVX2 build is compared with OpenBLAS's AVX2 (Haswell) kernels: the
    # library picks its kernels at run time and would otherwise use AVX-512
    env_avx2 = dict(env, OPENBLAS_CORETYPE="Haswell")

    def c(isa, *args):
        return parse(sh([bins[isa], *map(str, args)], env_avx2 if isa == "avx2" else env))

    def torch(*args):
        return parse(sh([py, "bench/torch_bench.py", *map(str, args)], env))

    print(f"machine: {machine()}; {a.threads} threads; {a.rounds} rounds, medians; PyTorch and numpy BLAS: {blas_desc}", flush=True)
    # per-core peak (one thread, best of 5) times the threads: a shared
    # machine lowers a two-thread measurement more than a one-thread one
    peak1 = parse(sh([bins["native"], "peak"], dict(env, OMP_NUM_THREADS="1")))
    peak = {key: v * a.threads for key, v in peak1.items() if key.startswith("peak_")}
    rows = []

    # --- GEMM at the encoder shape, ours vs OpenBLAS, same process and run
    g = {isa: [] for isa in bins}
    for _ in range(a.rounds):
        for isa in bins:
            g[isa].append(c(isa, "gemm", 512, 24576, 768, 5))
    gemm = {}
    for isa in bins:
        ours = statistics.median(r["gemm_ours_gflops"] for r in g[isa])
        blas = statistics.median(r["gemm_openblas_gflops"] for r in g[isa]) if have_cblas else float("nan")
        ratio = statistics.median(r["gemm_ours_gflops"] / r["gemm_openblas_gflops"] for r in g[isa]) if have_cblas else float("nan")
        cratio = statistics.median(r["gemm_ours_gflops_per_cpu"] / r["gemm_openblas_gflops_per_cpu"] for r in g[isa]) if have_cblas else float("nan")
        gemm[isa] = (ours, blas, ratio, cratio)
        print(f"gemm {isa}: ours {ours:.0f} GFLOP/s, OpenBLAS {blas:.0f}, ratio {ratio:.2f} "
              f"(L2 {g[isa][0].get('l2_kib', 0):.0f} KiB as the CPU reports it, 0: unknown; {g[isa][0].get('tile_group', 0):.0f} packed tiles a group)", flush=True)

    # --- training and encoding, configuration by configuration
    #     name, d, L, k, B, grad_acc, dead fraction, C steps, torch steps
    configs = [("nomic 768, x32", 768, 24576, 64, 512, 4, 0.25, 3, 2)]
    if not a.quick:
        configs += [
            ("nomic 768, x32, no dead", 768, 24576, 64, 512, 4, 0.0, 3, 2),
            ("MiniLM 384, x4", 384, 1536, 128, 1024, 4, 0.25, 5, 3),
            ("MiniLM 384, x8", 384, 3072, 128, 1024, 4, 0.25, 5, 3),
            ("100-d, x32", 100, 3200, 32, 512, 4, 0.25, 10, 3),
        ]
    # rounds outermost: a burst of load from other processes then spoils one
    # round of every configuration rather than every round of one
    res = {c[0]: {"native": [], "avx2": [], "torch": [], "enc_native": [], "enc_avx2": [], "enc_torch": []} for c in configs}
    for rnd in range(a.rounds):
        for name, d, L, k, B, acc, dead, cs, ts in configs:
            r = res[name]
            r["native"].append(c("native", "train", d, L, k, B, acc, dead, cs))
            r["torch"].append(torch("train", d, L, k, B, acc, dead, ts, T, "eager"))
            r["avx2"].append(c("avx2", "train", d, L, k, B, acc, dead, cs))
            r["enc_native"].append(c("native", "encode", d, L, k, 4 * B, 3))
            r["enc_torch"].append(torch("encode", d, L, k, 4 * B, 3, T))
            r["enc_avx2"].append(c("avx2", "encode", d, L, k, 4 * B, 3))
            print(f"round {rnd + 1} {name}: ours {r['native'][-1]['train_samples_per_s']:.0f}, avx2 {r['avx2'][-1]['train_samples_per_s']:.0f}, "
                  f"torch {r['torch'][-1]['train_samples_per_s']:.0f} samples/s; encode {r['enc_native'][-1]['encode_samples_per_s']:.0f} / "
                  f"{r['enc_avx2'][-1]['encode_samples_per_s']:.0f} / {r['enc_torch'][-1]['encode_samples_per_s']:.0f}", flush=True)
    for name, d, L, k, B, acc, dead, cs, ts in configs:
        k_aux = min(d // 2, round(dead * L)) if dead > 0 else 0
        flops = 2 * L * d + 8 * (k + k_aux) * d  # encoder + sparse decode/backward, per sample
        r = res[name]

        def key(k2, cpu=False):
            return ("encode" if k2.startswith("enc") else "train") + ("_samples_per_cpu_s" if cpu else "_samples_per_s")
        med = {k2: statistics.median(x[key(k2)] for x in v) for k2, v in r.items()}
        medc = {k2: statistics.median(x[key(k2, True)] for x in v) for k2, v in r.items()}
        ratio = {isa: statistics.median(x["train_samples_per_s"] / y["train_samples_per_s"] for x, y in zip(r[isa], r["torch"]))
                 for isa in ("native", "avx2")}
        cratio = statistics.median(x["train_samples_per_cpu_s"] / y["train_samples_per_cpu_s"] for x, y in zip(r["native"], r["torch"]))
        eratio = {isa: statistics.median(x["encode_samples_per_s"] / y["encode_samples_per_s"] for x, y in zip(r["enc_" + isa], r["enc_torch"]))
                  for isa in ("native", "avx2")}
        ecratio = statistics.median(x["encode_samples_per_cpu_s"] / y["encode_samples_per_cpu_s"] for x, y in zip(r["enc_native"], r["enc_torch"]))
        rss = statistics.median(x["peak_rss_lib_mb"] for x in r["native"])
        state = 4 * r["native"][0]["params_mb"]
        trss = statistics.median(x["peak_rss_mb"] for x in r["torch"]) if "peak_rss_mb" in r["torch"][0] else float("nan")
        rows.append(dict(name=name, med=med, medc=medc, ratio=ratio, cratio=cratio, eratio=eratio, ecratio=ecratio, flops=flops,
                         rss=rss, state=state, trss=trss, dead=r["native"][0]["dead_fraction"]))
    if a.gather:
        name, d, L, k, B, acc, dead, _, _ = configs[0]
        gth = torch("train", d, L, k, B, acc, dead, 1, T, "gather")
        print(f"{name}: PyTorch with tests/torch_ref.py's gather decoder: {gth['train_samples_per_s']:.0f} samples/s", flush=True)

    # --- the table
    p512, p2 = peak.get("peak_avx512_gflops", float("nan")), peak["peak_avx2_gflops"]
    print()
    print(f"Machine: {machine()}. Threads: {a.threads} (ours: OMP_NUM_THREADS; PyTorch: torch.set_num_threads, "
          f"OpenBLAS {a.threads}). fp32 FMA peak: {p512:.0f} GFLOP/s with AVX-512, {p2:.0f} GFLOP/s with AVX2 "
          f"(one core measured with 12 independent FMA chains, best of 5, times {a.threads}). "
          f"PyTorch and numpy run on {blas_desc}.")
    print()
    print("Training, samples/s:")
    print()
    print("| configuration | ours, -march=native | ours, -mavx2 -mfma | PyTorch (latent-sae eager) | speed-up (AVX2) | per CPU-second: ours / PyTorch | GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        m, mc = r["med"], r["medc"]
        gf = r["flops"] * m["native"] / 1e9
        print(f"| {r['name']} | {m['native']:.0f} | {m['avx2']:.0f} | {m['torch']:.0f} | {r['ratio']['native']:.1f}x ({r['ratio']['avx2']:.1f}x) | "
              f"{mc['native']:.0f} / {mc['torch']:.0f} = {r['cratio']:.1f}x | {gf:.0f} ({100 * gf / p512:.0f}%) |")
    print()
    print("Encoding (top-k of 4 B rows a call), samples/s:")
    print()
    print("| configuration | ours, -march=native | ours, -mavx2 -mfma | PyTorch (relu(x W^T + b).topk) | speed-up (AVX2) | per CPU-second |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        m, mc = r["med"], r["medc"]
        print(f"| {r['name']} | {m['enc_native']:.0f} | {m['enc_avx2']:.0f} | {m['enc_torch']:.0f} | "
              f"{r['eratio']['native']:.1f}x ({r['eratio']['avx2']:.1f}x) | {mc['enc_native']:.0f} / {mc['enc_torch']:.0f} = {r['ecratio']:.1f}x |")
    print()
    print("Median of the rounds; speed-ups are medians of per-round ratios (each round runs ours and PyTorch back to back). "
          "Training: B rows a batch, 4 batches an optimizer step, AuxK on with the stated fraction of latents held dead. "
          "Per CPU-second: samples over the process's CPU time, which a busy shared machine disturbs less than wall time. "
          "GFLOP/s counts the work an exact sparse step must do (2 L d for the encoder, 8 (k + k_aux) d for decode and "
          "backward, per sample) at the -march=native wall-clock rate.")
    print()
    print("| GEMM 512 x 24576 x 768 (C = A B^T) | ours | OpenBLAS sgemm (same ISA) | ours / OpenBLAS | same, per CPU-second |")
    print("|---|---|---|---|---|")
    for isa in bins:
        o, b, q, qc = gemm[isa]
        print(f"| {'-march=native' if isa == 'native' else '-mavx2 -mfma'} | {o:.0f} GFLOP/s | {b:.0f} GFLOP/s | {q:.2f} | {qc:.2f} |")
    print()
    print("| configuration | peak RSS of the trainer | params + grads + Adam m, v | overhead | PyTorch peak RSS |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['rss']:.0f} MiB | {r['state']:.0f} MiB | {100 * (r['rss'] / r['state'] - 1):+.1f}% | {r['trss']:.0f} MiB |")
    print()
    prepass(a, bins, env)
    return trainpp(a, bins, env)


if __name__ == "__main__":
    if not shutil.which(os.environ.get("CC", "cc")):
        sys.exit("no C compiler (set CC)")
    sys.exit(main())

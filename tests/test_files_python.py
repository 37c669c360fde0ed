#!/usr/bin/env python3
"""latentsae's files against the real Python tools (docs/files.md, issue 3).

Run with a python that has latentsae (PyPI), safetensors, numpy, torch and
pyarrow (see tests/requirements-files.txt and the Makefile's venv):

    python tests/test_files_python.py build/files_driver

Checks, each against what the Python library itself writes or computes:
  1. a model saved by latent-sae's Sae.save_to_disk loads here; our encode of
     1,000 random unit rows equals sae.encode: same index sets, activations
     within 1e-5;
  2. a model we save loads with Sae.load_from_disk and encodes the same;
  3. latent-sae's mean_center models (input_mean folded into b_dec);
  4. F16 and BF16 checkpoints written by safetensors from torch: exact
     against torch on the same rounded weights, and within the half-precision
     bound against the float32 original (derivation at the check);
  5. embeddings written by np.save (f32, f16, format versions 1-3),
     torch.save (f32, f16, bf16, a view at a storage offset), the
     safetensors library and ndarray.tofile read back bit for bit; Fortran
     order, float64, non-contiguous and legacy torch files refused clearly;
  6. Parquet (pyarrow) through tools/parquet_to_npy.py reads back exactly;
  7. SAELens: our SAELens files hold W_enc transposed and encode as SAELens's
     formula; a SAELens directory written here by safetensors converts back;
  8. the SAE types (docs/math.md 3.5): latent-sae's batchtopk and matryoshka
     models (with k_anneal) load here and encode as its Sae.encode, by both
     lsae_model_encode and lsae_model_encode_sparse; ours (batchtopk capped
     and not, matryoshka nested and per-level) load there and encode as
     docs/math.md says latent-sae will.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file as st_save_torch
from safetensors.numpy import save_file as st_save_np

from latentsae import Sae, SaeConfig
from latentsae.utils.config import SaeType

DRIVER = sys.argv[1] if len(sys.argv) > 1 else "build/files_driver"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = tempfile.mkdtemp(prefix="lsae_py_", dir=os.path.join(ROOT, "build"))
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def drv(*args, ok=True):
    p = subprocess.run([DRIVER, *map(str, args)], capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise RuntimeError(f"driver {args}: {p.stdout}{p.stderr}")
    return p.returncode, p.stdout.strip()


def path(*parts):
    return os.path.join(WORK, *parts)


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def our_encode(model_dir, x, sparse=False):
    xf = path("x.f32")
    x.astype(np.float32).tofile(xf)
    _, out = drv("encode", model_dir, xf, len(x), path("enc"), *(["sparse"] if sparse else []))
    rows, k = out.split()[1:3]
    acts = np.fromfile(path("enc.acts"), dtype=np.float32).reshape(int(rows), int(k))
    idx = np.fromfile(path("enc.idx"), dtype=np.int32).reshape(int(rows), int(k))
    return acts, idx


def compare_encodings(name, acts, idx, ref_acts, ref_idx, tol=1e-5, sorted_=True):
    """Same index set per row and the same activation for each index. Latents
    whose activation is 0 (ReLU) are interchangeable: torch.topk picks any of
    them, so only positive ones are compared as sets."""
    bad_sets = bad_vals = 0
    worst = 0.0
    for r in range(len(acts)):
        ours = {int(i): float(a) for i, a in zip(idx[r], acts[r]) if a > 0}
        ref = {int(i): float(a) for i, a in zip(ref_idx[r], ref_acts[r]) if a > 0}
        if set(ours) != set(ref):
            bad_sets += 1
            continue
        for i in ours:
            e = abs(ours[i] - ref[i])
            worst = max(worst, e)
            if not e <= tol:
                bad_vals += 1
        # ours are sorted, largest first
        if sorted_ and np.any(np.diff(acts[r]) > 0):
            bad_vals += 1
    check(bad_sets == 0, f"{name}: {bad_sets} rows with different index sets")
    check(bad_vals == 0, f"{name}: {bad_vals} activations off by more than {tol} (worst {worst:.3g})")
    print(f"  {name}: {len(acts)} rows, index sets equal, worst |diff| {worst:.2e}")


def torch_encode(sae, x):
    with torch.no_grad():
        out = sae.encode(torch.from_numpy(x))
    return out.top_acts.float().numpy(), out.top_indices.numpy()


def randomize(sae, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.encoder.bias.copy_(torch.randn(sae.encoder.bias.shape, generator=g) * 0.01)
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=g) * 0.05)


# 1. latent-sae -> latentsae
def test_latentsae_to_us():
    torch.manual_seed(0)
    sae = Sae(64, SaeConfig(k=16, expansion_factor=8))
    randomize(sae, 1)
    sae.save_to_disk(path("ls_model"))
    cfg = json.load(open(path("ls_model", "cfg.json")))
    check(cfg.get("sae_type") == "TOPK" and len(cfg) > 20, "latent-sae wrote its current cfg.json (sae_type TOPK, ~30 keys)")
    x = unit_rows(1000, 64, 2)
    acts, idx = our_encode(path("ls_model"), x)
    ra, ri = torch_encode(sae, x)
    compare_encodings("latent-sae model, our encode vs sae.encode", acts, idx, ra, ri)


# 2. latentsae -> latent-sae
def test_us_to_latentsae():
    drv("create", path("our_model"), 48, 384, 12, 7)
    sae = Sae.load_from_disk(path("our_model"))
    check(sae.num_latents == 384 and sae.cfg.k == 12, "Sae.load_from_disk reads our cfg.json")
    x = unit_rows(1000, 48, 3)
    acts, idx = our_encode(path("our_model"), x)
    ra, ri = torch_encode(sae, x)
    compare_encodings("our model, Sae.load_from_disk encode vs ours", acts, idx, ra, ri)
    # and our converter writes what it read, bit for bit
    drv("convert", path("ls_model"), path("ls_model_copy"))
    from safetensors.numpy import load_file
    a, b = load_file(path("ls_model", "sae.safetensors")), load_file(path("ls_model_copy", "sae.safetensors"))
    check(set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), "latent-sae model -> ours -> file: same tensors bit for bit")


# 3. mean_center
def test_mean_center():
    torch.manual_seed(3)
    sae = Sae(32, SaeConfig(k=8, expansion_factor=8, mean_center=True))
    randomize(sae, 4)
    with torch.no_grad():
        sae.input_mean.copy_(torch.randn(32) * 0.3)
    sae.save_to_disk(path("mc_model"))
    x = unit_rows(1000, 32, 5)
    acts, idx = our_encode(path("mc_model"), x)
    ra, ri = torch_encode(sae, x)
    # b_dec + mean is rounded once: allow a near-tie at the k-th place to swap
    compare_encodings("mean_center model (input_mean folded into b_dec)", acts, idx, ra, ri, tol=1e-5)


# 4. half-precision checkpoints
def test_half(dtype, name, unit_roundoff):
    torch.manual_seed(5)
    sae = Sae(64, SaeConfig(k=16, expansion_factor=8))
    randomize(sae, 6)
    half = Sae(64, SaeConfig(k=16, expansion_factor=8), dtype=dtype)
    half.load_state_dict({k: v.to(dtype) for k, v in sae.state_dict().items()})
    d = path(f"{name}_model")
    half.save_to_disk(d)  # safetensors from torch, dtype F16 / BF16
    header = open(os.path.join(d, "sae.safetensors"), "rb").read(400)
    check(name.upper().encode() in header, f"{name}: the file really holds {name.upper()} tensors")
    x = unit_rows(1000, 64, 7)
    acts, idx = our_encode(d, x)
    # (a) exact: the same rounded weights, upcast to float32, in torch
    up = Sae(64, SaeConfig(k=16, expansion_factor=8))
    up.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    ra, ri = torch_encode(up, x)
    compare_encodings(f"{name} checkpoint vs torch on the same weights in float32", acts, idx, ra, ri)
    # (b) against the float32 original. Rounding each weight w to half changes
    # it by at most u |w| (u = 2^-11 for F16, 2^-8 for BF16, round to nearest).
    # A pre-activation W_l (x - b_dec) + b_enc_l then moves by at most
    #   u (sum_i |W_li| |x_i - b_i| + |W_l| . |b| + |b_enc_l|)  <=  u (||W_l|| (||x|| + 2||b||) + |b_enc_l|) + O(u^2)
    # (b_dec rounded too), and ReLU is 1-Lipschitz. The j-th largest of a
    # vector moves by at most the largest move of any entry, so the sorted
    # top-k activations differ by at most that bound, whatever indices tie.
    W = sae.encoder.weight.detach().double().numpy()
    be = sae.encoder.bias.detach().double().numpy()
    bd = sae.b_dec.detach().double().numpy()
    wn = np.linalg.norm(W, axis=1)
    bound = unit_roundoff * ((wn * (1 + 2 * np.linalg.norm(bd))).max() + np.abs(be).max()) * 1.01 + 1e-6
    fa, _ = torch_encode(sae, x)
    fa = -np.sort(-fa, axis=1)
    worst = float(np.abs(acts - fa).max())
    check(worst <= bound, f"{name}: sorted top-k within the rounding bound {bound:.3g} of the float32 model (worst {worst:.3g})")
    print(f"  {name} vs float32 original: worst {worst:.2e} <= bound {bound:.2e}")


# 5. embeddings written by numpy, torch, safetensors
def dump(p, *opts):
    rc, out = drv("dump", p, path("dump.f32"), *opts, ok=False)
    if rc != 0:
        return None, out
    _, rows, d = out.split()
    return np.fromfile(path("dump.f32"), dtype=np.float32).reshape(int(rows), int(d)), out


def refused(p, words, *opts):
    rc, out = drv("open", p, *opts, ok=False)
    check(rc == 2 and all(w in out for w in words) and p in out, f"{os.path.basename(p)} refused mentioning {words}: got {out!r}")


def test_embeddings():
    rng = np.random.default_rng(11)
    x32 = rng.standard_normal((257, 24)).astype(np.float32)
    x32[3, 5] = np.float32(1e-40)  # a subnormal survives
    x16 = (rng.standard_normal((100, 24)) * 100).astype(np.float16)
    x16[0, :4] = [np.float16(6e-8), np.float16(65504), -0.0, np.inf]
    np.save(path("a32.npy"), x32)
    np.save(path("a16.npy"), x16)
    for v in [(1, 0), (2, 0), (3, 0)]:
        with open(path(f"v{v[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, x32, version=v)
    got, _ = dump(path("a32.npy"))
    check(got is not None and got.tobytes() == x32.tobytes(), "np.save float32 reads back bit-exactly")
    got, _ = dump(path("a32.npy"), "--no-mmap")
    check(got is not None and got.tobytes() == x32.tobytes(), "np.save float32 via stdio (no mmap) bit-exactly")
    got, _ = dump(path("a16.npy"))
    check(got is not None and got.tobytes() == x16.astype(np.float32).tobytes(), "np.save float16 reads back bit-exactly (as numpy's float32 cast)")
    for v in (1, 2, 3):
        got, _ = dump(path(f"v{v}.npy"))
        check(got is not None and got.tobytes() == x32.tobytes(), f"npy format version {v}.0 reads back")
    # big-endian, as np.save writes on s390x: read in that order
    np.save(path("be32.npy"), x32.astype(">f4"))
    np.save(path("be16.npy"), x16.astype(">f2"))
    for opts in ((), ("--no-mmap",)):
        got, _ = dump(path("be32.npy"), *opts)
        check(got is not None and got.tobytes() == x32.tobytes(), f"np.save '>f4' (big-endian) reads back bit-exactly {' '.join(opts)}")
        got, _ = dump(path("be16.npy"), *opts)
        check(got is not None and got.tobytes() == x16.astype(np.float32).tobytes(), f"np.save '>f2' (big-endian) reads back bit-exactly {' '.join(opts)}")
    np.save(path("fortran.npy"), np.asfortranarray(x32))
    refused(path("fortran.npy"), ["Fortran"])
    np.save(path("f64.npy"), x32.astype(np.float64))
    refused(path("f64.npy"), ["'<f8'", "float32"])
    np.save(path("i32.npy"), np.zeros((3, 4), dtype=np.int32))
    refused(path("i32.npy"), ["'<i4'"])
    np.save(path("one_d.npy"), x32[0])
    refused(path("one_d.npy"), ["1-D"])
    with open(path("a32.npy"), "rb") as f:
        blob = f.read()
    with open(path("cut.npy"), "wb") as f:
        f.write(blob[:-5])
    refused(path("cut.npy"), ["truncated"])

    # torch.save: the zip archive with a pickle, storages by persistent id
    t32 = torch.from_numpy(x32.copy())
    torch.save(t32, path("t32.pt"))
    torch.save(torch.from_numpy(x16.copy()), path("t16.pt"))
    tb = torch.from_numpy(x32.copy()).to(torch.bfloat16)
    torch.save(tb, path("tbf16.pt"))
    big = torch.from_numpy(rng.standard_normal((50, 24)).astype(np.float32))
    torch.save(big[7:19], path("view.pt"))  # saves the whole storage, offset 7*24
    got, _ = dump(path("t32.pt"))
    check(got is not None and got.tobytes() == x32.tobytes(), "torch.save float32 reads back bit-exactly")
    got, _ = dump(path("t16.pt"))
    check(got is not None and got.tobytes() == x16.astype(np.float32).tobytes(), "torch.save float16 bit-exactly")
    got, _ = dump(path("tbf16.pt"))
    check(got is not None and got.tobytes() == tb.float().numpy().tobytes(), "torch.save bfloat16 bit-exactly")
    got, _ = dump(path("view.pt"))
    check(got is not None and got.tobytes() == big[7:19].numpy().tobytes(), "torch.save of a view (storage offset) bit-exactly")
    torch.save({"embeddings": t32, "ids": torch.arange(5)}, path("dict.pt"))
    got, _ = dump(path("dict.pt"))
    check(got is not None and got.tobytes() == x32.tobytes(), "torch.save of a dict holding one 2-D tensor")
    torch.save(t32.t(), path("transposed.pt"))
    refused(path("transposed.pt"), ["not C-contiguous", "contiguous()"])
    torch.save(t32.double(), path("f64.pt"))
    refused(path("f64.pt"), ["DoubleStorage"])
    torch.save(t32.reshape(257, 4, 6), path("three_d.pt"))
    refused(path("three_d.pt"), ["3 dimensions"])
    torch.save(t32, path("legacy.pt"), _use_new_zipfile_serialization=False)
    refused(path("legacy.pt"), ["legacy"])
    with open(path("t32.pt"), "rb") as f:
        blob = f.read()
    with open(path("t32_cut.pt"), "wb") as f:
        f.write(blob[: len(blob) // 2])
    refused(path("t32_cut.pt"), [])

    # safetensors, from torch and from numpy
    st_save_torch({"emb": t32, "bias": torch.zeros(24)}, path("e.safetensors"))
    got, _ = dump(path("e.safetensors"))
    check(got is not None and got.tobytes() == x32.tobytes(), "safetensors (torch) float32, the only 2-D tensor, bit-exactly")
    st_save_torch({"a": tb, "b": t32}, path("two.safetensors"))
    got, _ = dump(path("two.safetensors"), "--tensor", "a")
    check(got is not None and got.tobytes() == tb.float().numpy().tobytes(), "safetensors bfloat16 by name, bit-exactly")
    refused(path("two.safetensors"), ["tensor_name"])
    st_save_np({"emb": x16}, path("h.safetensors"))
    got, _ = dump(path("h.safetensors"))
    check(got is not None and got.tobytes() == x16.astype(np.float32).tobytes(), "safetensors (numpy) float16 bit-exactly")

    # raw dumps, including latent-sae's headerless ".npy"
    x32.tofile(path("r.f32"))
    got, _ = dump(path("r.f32"), "--d-in", 24)
    check(got is not None and got.tobytes() == x32.tobytes(), "raw f32 dump bit-exactly")
    x16.tofile(path("headerless.npy"))
    got, _ = dump(path("headerless.npy"), "--d-in", 24, "--dtype", "f16")
    check(got is not None and got.tobytes() == x16.astype(np.float32).tobytes(), "headerless .npy (raw f16, latent-sae 2024) bit-exactly")
    refused(path("headerless.npy"), ["no \\x93NUMPY header"])
    refused(path("r.f32"), ["not a whole number", "width 25"], "--d-in", 25)

    # a directory of shards (data-* only, sorted), from np.save
    os.makedirs(path("shards"))
    for i, (a, b) in enumerate([(0, 100), (100, 101), (101, 257)]):
        np.save(path("shards", f"data-{i:05d}.npy"), x32[a:b])
    np.save(path("shards", "chunk_offsets.npy"), np.arange(3, dtype=np.float32).reshape(3, 1))
    got, out = dump(path("shards"))
    check(got is not None and got.tobytes() == x32.tobytes(), f"shard directory reads as one dataset in name order ({out})")


# 6. Parquet
def test_parquet():
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1234, 16)).astype(np.float32)
    os.makedirs(path("pq"))
    for i, (a, b) in enumerate([(0, 500), (500, 1234)]):
        col = pa.array(list(x[a:b]), type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"id": np.arange(a, b), "embedding": col}), path("pq", f"part-{i}.parquet"), row_group_size=200)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "parquet_to_npy.py"), path("pq"), path("pq_npy"), "--rows-per-shard", "300"],
                   check=True, capture_output=True)
    shards = sorted(os.listdir(path("pq_npy")))
    check(shards == [f"data-{i:05d}.npy" for i in range(5)], f"parquet_to_npy wrote 5 shards of 300 rows: {shards}")
    got, _ = dump(path("pq_npy"))
    check(got is not None and got.tobytes() == x.tobytes(), "Parquet -> tools/parquet_to_npy.py -> our reader, bit-exactly")


# 7. SAELens
def saelens_encode(W_enc, b_enc, W_dec, b_dec, k, x, rescale=False):
    """SAELens TopKSAE.encode: topk over (x - b_dec) @ W_enc + b_enc (times the
    decoder norms when rescale_acts_by_decoder_norm), then ReLU."""
    pre = (torch.from_numpy(x) - b_dec) @ W_enc + b_enc
    if rescale:
        pre = pre * W_dec.norm(dim=-1)
    v, i = pre.topk(k, dim=-1, sorted=False)
    return v.relu().numpy(), i.numpy()


def test_saelens():
    from safetensors.torch import load_file
    drv("saelens", path("ls_model"), path("sl_model"))
    cfg = json.load(open(path("sl_model", "cfg.json")))
    w = load_file(path("sl_model", "sae_weights.safetensors"))
    ours = load_file(path("ls_model", "sae.safetensors"))
    check(cfg["architecture"] == "topk" and cfg["d_in"] == 64 and cfg["d_sae"] == 512 and cfg["k"] == 16, f"SAELens cfg.json keys: {cfg}")
    check(torch.equal(w["W_enc"], ours["encoder.weight"].T) and torch.equal(w["W_dec"], ours["W_dec"]) and torch.equal(w["b_enc"], ours["encoder.bias"])
          and torch.equal(w["b_dec"], ours["b_dec"]), "SAELens file: W_enc [d_in, d_sae] is encoder.weight transposed; the rest as is")
    x = unit_rows(1000, 64, 13)
    ra, ri = saelens_encode(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], 16, x)
    acts, idx = our_encode(path("sl_model"), x)
    compare_encodings("SAELens file (loaded back) vs SAELens's encode formula", acts, idx, ra, ri)
    # a SAELens-written layout with rescale_acts_by_decoder_norm and non-unit decoder rows
    g = torch.Generator().manual_seed(14)
    d, L, k = 32, 256, 8
    W_enc = torch.randn(d, L, generator=g) / d ** 0.5
    W_dec = torch.randn(L, d, generator=g) * torch.rand(L, 1, generator=g) * 2
    b_enc = torch.randn(L, generator=g) * 0.01
    b_dec = torch.randn(d, generator=g) * 0.05
    os.makedirs(path("sl_rescale"))
    st_save_torch({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, path("sl_rescale", "sae_weights.safetensors"))
    json.dump({"architecture": "topk", "d_in": d, "d_sae": L, "k": k, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
               "normalize_activations": "none", "reshape_activations": "none", "rescale_acts_by_decoder_norm": True,
               "metadata": {"sae_lens_version": "6.12.0"}}, open(path("sl_rescale", "cfg.json"), "w"))
    x = unit_rows(1000, d, 15)
    ra, ri = saelens_encode(W_enc, b_enc, W_dec, b_dec, k, x, rescale=True)
    acts, idx = our_encode(path("sl_rescale"), x)
    compare_encodings("SAELens rescale_acts_by_decoder_norm (folded) vs SAELens's formula", acts, idx, ra, ri, tol=2e-5)
    # converted to latent-sae's format, latent-sae encodes it the same way
    drv("convert", path("sl_rescale"), path("sl_to_ls"))
    sae = Sae.load_from_disk(path("sl_to_ls"))
    la, li = torch_encode(sae, x)
    compare_encodings("SAELens -> latent-sae format -> Sae.encode vs SAELens's formula", la, li, ra, ri, tol=2e-5, sorted_=False)


# 8. the SAE types
def set_threshold_between(sae, x, q):
    """A threshold in the middle of a wide gap of the batch's positive
    pre-activations near quantile q, so float rounding cannot move a latent
    across it."""
    with torch.no_grad():
        z = sae.pre_acts(torch.from_numpy(x)).flatten().double().numpy()
    z = np.sort(z[z > 0])
    lo, hi = int(len(z) * (q - 0.05)), int(len(z) * (q + 0.05))
    g = np.argmax(np.diff(z[lo:hi])) + lo
    theta = float(np.float32(0.5 * (z[g] + z[g + 1])))
    with torch.no_grad():
        sae.batchtopk_threshold.fill_(theta)
    return theta


def test_types_latentsae_to_us():
    x = unit_rows(1000, 64, 11)
    # batchtopk (latent-sae always caps a row at k), k_anneal on
    torch.manual_seed(3)
    sae = Sae(64, SaeConfig(sae_type=SaeType.BATCHTOPK, k=16, expansion_factor=8, k_anneal=True, k_anneal_pct=0.2))
    randomize(sae, 4)
    theta = set_threshold_between(sae, x, 0.9)
    sae.save_to_disk(path("ls_btk"))
    cfg = json.load(open(path("ls_btk", "cfg.json")))
    check(cfg["sae_type"] == "BATCHTOPK" and cfg["batchtopk_threshold"] == 0.0 and "batchtopk_row_cap" not in cfg,
          "latent-sae writes sae_type BATCHTOPK, its configured threshold 0 and no row cap key")
    ra, ri = torch_encode(sae, x)
    npos = (ra > 0).sum(axis=1)
    check(npos.min() < 16 and npos.max() == 16, f"the threshold cuts some rows below k and the cap others (kept {npos.min()}..{npos.max()})")
    for sparse in (False, True):
        acts, idx = our_encode(path("ls_btk"), x, sparse)
        compare_encodings(f"latent-sae batchtopk (threshold {theta:.4g}), our {'sparse ' if sparse else ''}encode vs sae.encode", acts, idx, ra, ri)
    _, out = drv("encode", path("ls_btk"), path("x.f32"), len(x), path("enc"))
    check(abs(float(out.split()[4]) - theta) <= 1e-7 * theta, "the threshold comes from the batchtopk_threshold tensor, not cfg.json's 0")
    # matryoshka per level, batch-wide in training: encode is the best ks[-1], no threshold
    torch.manual_seed(5)
    sae = Sae(64, SaeConfig(sae_type=SaeType.MATRYOSHKA, k=12, expansion_factor=8, matryoshka_sizes="64,128,512", matryoshka_ks="4,8,24",
                            matryoshka_loss_weights="1,1,2", matryoshka_use_batchtopk=True, k_anneal=True))
    randomize(sae, 6)
    set_threshold_between(sae, x, 0.5)
    sae.save_to_disk(path("ls_mat"))
    ra, ri = torch_encode(sae, x)
    check(ri.shape[1] == 24, "latent-sae's matryoshka encode keeps matryoshka_ks[-1]")
    for sparse in (False, True):
        acts, idx = our_encode(path("ls_mat"), x, sparse)
        compare_encodings(f"latent-sae matryoshka, our {'sparse ' if sparse else ''}encode vs sae.encode", acts, idx, ra, ri, sorted_=not sparse)
    # a config given the string "batchtopk" is written as that string: read too
    sae = Sae(64, SaeConfig(sae_type="batchtopk", k=16, expansion_factor=8))
    sae.save_to_disk(path("ls_btk_str"))
    rc, out = drv("encode", path("ls_btk_str"), path("x.f32"), len(x), path("enc"))
    check(json.load(open(path("ls_btk_str", "cfg.json")))["sae_type"] == "batchtopk" and rc == 0, "sae_type 'batchtopk' in lower case loads")
    # gated, jumprelu, lista: refused by name
    for t in ("gated", "jumprelu", "lista"):
        torch.manual_seed(7)
        Sae(16, SaeConfig(sae_type=t, k=4, expansion_factor=2)).save_to_disk(path("ls_" + t))
        rc, out = drv("encode", path("ls_" + t), path("x.f32"), 0, path("enc"), ok=False)
        check(rc != 0 and "LSAE_UNSUPPORTED" in out and t in out.lower(), f"latent-sae {t} model refused naming the type: {out}")


def test_types_us_to_latentsae():
    x = unit_rows(1000, 48, 12)
    # capped batchtopk: latent-sae loads it (batchtopk_row_cap ignored) and encodes the same
    drv("create", path("our_btk_cap"), 48, 384, 12, 7, "batchtopk", "cap", "anneal", "theta=0.16")
    sae = Sae.load_from_disk(path("our_btk_cap"))
    check(sae.cfg.sae_type.name == "BATCHTOPK" and float(sae.batchtopk_threshold) == float(np.float32(0.16)) and sae.cfg.k_anneal,
          "Sae.load_from_disk reads our batchtopk cfg.json and threshold tensor")
    ra, ri = torch_encode(sae, x)
    npos = (ra > 0).sum(axis=1)
    check(npos.min() < 12, f"the threshold leaves some rows short of k (kept {npos.min()}..{npos.max()})")
    for sparse in (False, True):
        acts, idx = our_encode(path("our_btk_cap"), x, sparse)
        compare_encodings(f"our capped batchtopk, Sae.load_from_disk encode vs our {'sparse ' if sparse else ''}encode", acts, idx, ra, ri)
    # uncapped: ours keeps every z >= theta; latent-sae, which always caps, keeps its best k of them
    drv("create", path("our_btk"), 48, 384, 12, 7, "batchtopk", "theta=0.16")
    sae = Sae.load_from_disk(path("our_btk"))
    ra, ri = torch_encode(sae, x)
    acts, idx = our_encode(path("our_btk"), x, True)
    check(((acts > 0).sum(axis=1) > 12).any(), "uncapped: some row keeps more than k")
    compare_encodings("our uncapped batchtopk cut to its best k vs latent-sae's capped encode", acts[:, :12], idx[:, :12], ra, ri)
    rc, out = drv("encode", path("our_btk"), path("x.f32"), len(x), path("enc"), ok=False)
    check(rc != 0 and "lsae_model_encode_sparse" in out, f"the fixed-k encode refuses the uncapped model: {out}")
    # per-level matryoshka with a threshold tensor (not used by encode)
    drv("create", path("our_mat"), 48, 384, 12, 7, "per-level", "btk", "theta=0.5")
    sae = Sae.load_from_disk(path("our_mat"))
    check(sae._matryoshka_sizes == [96, 192, 384] and sae._matryoshka_ks == [3, 6, 12] and sae._matryoshka_loss_weights == [1.0, 1.0, 2.0],
          "Sae.load_from_disk reads our matryoshka lists")
    ra, ri = torch_encode(sae, x)
    acts, idx = our_encode(path("our_mat"), x)
    compare_encodings("our per-level matryoshka, Sae.load_from_disk encode vs ours", acts, idx, ra, ri)
    # nested: latent-sae reads it as per-level with k at every level, and encodes the best k as ours
    drv("create", path("our_nest"), 48, 384, 12, 7, "nested")
    cfg = json.load(open(path("our_nest", "cfg.json")))
    check(cfg["matryoshka_ks"] == "12,12,12" and cfg["matryoshka_form"] == "nested", f"nested writes matryoshka_ks = k at every level: {cfg}")
    sae = Sae.load_from_disk(path("our_nest"))
    ra, ri = torch_encode(sae, x)
    acts, idx = our_encode(path("our_nest"), x)
    compare_encodings("our nested matryoshka, Sae.load_from_disk encode vs ours", acts, idx, ra, ri)


def main():
    print(f"latent-sae, torch {torch.__version__}, numpy {np.__version__}; files in {WORK}")
    test_latentsae_to_us()
    test_us_to_latentsae()
    test_mean_center()
    test_half(torch.float16, "f16", 2.0 ** -11)
    test_half(torch.bfloat16, "bf16", 2.0 ** -8)
    test_embeddings()
    test_parquet()
    test_saelens()
    test_types_latentsae_to_us()
    test_types_us_to_latentsae()
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"test_files_python: {checks} checks, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

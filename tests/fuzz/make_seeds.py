#!/usr/bin/env python3
"""Seed corpora for the fuzz harnesses in tests/fuzz, from real files.

    build/venv/bin/python tests/fuzz/make_seeds.py [OUTDIR]   (default tests/fuzz/seeds)

Every seed is written by the tool that writes such files in the wild:
numpy (np.save, format versions 1-3), torch (torch.save, zip and legacy),
the safetensors library, latent-sae (Sae.save_to_disk, PyPI latentsae), plus
cfg.json texts from latent-sae 2024, latent-sae today, sparsify and SAELens
(the same ones tests/test_files.c checks), Hugging Face cache layouts and
checkpoint state files laid out as latentsae.h documents them. Needs numpy
and torch (Debian's /usr/bin/python3 has both); safetensors and latentsae
come from the venv `make test` builds (build/venv): without them those
seeds are skipped with a note. The seeds are committed; run this again
only to change them. Output is deterministic.
"""
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "seeds")

try:
    from safetensors.numpy import save as st_save_np
    from safetensors.torch import save as st_save_torch
except ImportError:
    st_save_np = st_save_torch = None
    print("note: no safetensors package: safetensors seeds skipped (use build/venv/bin/python)")
try:
    from latentsae import Sae, SaeConfig
except Exception:  # latentsae pulls in several packages
    Sae = SaeConfig = None
    print("note: no latentsae package: latent-sae model seeds skipped (use build/venv/bin/python)")

count = {}


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    count[harness] = count.get(harness, 0) + 1


def rows(n, d, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def npy_bytes(a, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, a)
    else:
        np.lib.format.write_array(b, a, version=version)
    return b.getvalue()


def torch_bytes(obj, legacy=False):
    b = io.BytesIO()
    if legacy:
        torch.save(obj, b, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, b)
    return b.getvalue()


def data_pkl(pt):
    with zipfile.ZipFile(io.BytesIO(pt)) as z:
        name = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        return z.read(name)


# ------------------------------------------------------------------ cfg.json
CFG_2024 = {"expansion_factor": 32, "normalize_decoder": True, "num_latents": 0, "k": 64, "signed": False, "d_in": 768}
CFG_SPARSIFY = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": 65536, "k": 32,
                "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": 2048}
CFG_SAELENS = {"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": True, "normalize_activations": "none", "rescale_acts_by_decoder_norm": False,
               "reshape_activations": "none", "metadata": {"model_name": "gpt2", "hook_name": "blocks.0.hook_resid_pre",
                                                           "context_size": 128, "prepend_bos": True}}
CFG_SAELENS5 = {"architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}, "d_in": 8,
                "d_sae": 16, "apply_b_dec_to_input": True, "normalize_activations": None, "finetuning_scaling_factor": False}
CFG_PY = '{"d_in": 8, "k": 2, "a": NaN, "b": Infinity, "c": -Infinity, "e": [1e-3, -0.5, "\\u00e9\\ud83d\\ude00"]}'


def cfg_seeds():
    put("cfg_json", "latentsae_2024.json", json.dumps(CFG_2024))
    put("cfg_json", "sparsify.json", json.dumps(CFG_SPARSIFY))
    put("cfg_json", "saelens6.json", json.dumps(CFG_SAELENS, indent=2))
    put("cfg_json", "saelens5.json", json.dumps(CFG_SAELENS5))
    put("cfg_json", "python_floats.json", CFG_PY)
    put("cfg_json", "ours.json", '{"expansion_factor": 2, "normalize_decoder": true, "num_latents": 16, "k": 2, "multi_topk": false, "d_in": 8}\n')
    put("cfg_json", "refused_signed.json", '{"d_in": 8, "k": 2, "signed": true}')
    put("cfg_json", "refused_groupmax.json", '{"d_in": 8, "k": 2, "activation": "groupmax"}')
    if SaeConfig is not None:
        # what latent-sae's SaeConfig writes today (all of its keys)
        c = SaeConfig(expansion_factor=4, k=4)
        d = c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))
        d["d_in"] = 16
        put("cfg_json", "latentsae_today.json", json.dumps(d, default=str))


# ---------------------------------------------------------------- safetensors
def st_seeds():
    if st_save_np is None:
        return
    put("safetensors", "f32_2d.safetensors", st_save_np({"emb": rows(6, 4)}))
    put("safetensors", "f32_two.safetensors", st_save_np({"emb": rows(3, 4, 1), "ids": np.arange(5, dtype=np.float32)},
                                                         metadata={"format": "np", "source": "fuzz seed"}))
    put("safetensors", "f16_2d.safetensors", st_save_np({"x": rows(4, 4, 2, np.float16)}))
    put("safetensors", "f64_2d.safetensors", st_save_np({"x": rows(2, 3, 3, np.float64)}))
    put("safetensors", "i32_1d.safetensors", st_save_np({"n": np.arange(6, dtype=np.int32)}))
    put("safetensors", "empty_rows.safetensors", st_save_np({"x": np.zeros((0, 4), np.float32)}))
    put("safetensors", "scalar.safetensors", st_save_np({"s": np.array(3.0, np.float32)}))
    put("safetensors", "bf16_2d.safetensors", st_save_torch({"x": torch.from_numpy(rows(3, 4, 4)).to(torch.bfloat16)}))
    put("safetensors", "mixed.safetensors", st_save_torch({"a": torch.ones(2, 2, dtype=torch.float16), "b": torch.zeros(3, dtype=torch.int64),
                                                           "c": torch.ones(2, 3, dtype=torch.bool)}))
    put("safetensors", "model_weights.safetensors", st_save_np(model_tensors(8, 16, 0)))


def model_tensors(d, L, seed, dtype=np.float32):
    g = np.random.default_rng(seed)
    W = g.standard_normal((L, d)).astype(np.float32)
    Wd = W / np.linalg.norm(W, axis=1, keepdims=True)
    return {"encoder.weight": W.astype(dtype), "encoder.bias": np.zeros(L, dtype), "W_dec": Wd.astype(dtype),
            "b_dec": (0.01 * g.standard_normal(d)).astype(dtype)}


# --------------------------------------------------------------------- models
SEP = b"\n#SAFETENSORS#\n"


def model_seed(name, cfg_text, weights, saelens=False):
    put("model", name, bytes([1 if saelens else 0]) + (cfg_text.encode() if isinstance(cfg_text, str) else cfg_text) +
        (SEP + weights if weights is not None else b""))


def model_seeds():
    if st_save_np is None:
        return
    ours = '{"expansion_factor": 2, "normalize_decoder": true, "num_latents": 16, "k": 2, "multi_topk": false, "d_in": 8}\n'
    model_seed("ours_f32", ours, st_save_np(model_tensors(8, 16, 1)))
    model_seed("ours_f16", ours, st_save_np(model_tensors(8, 16, 2, np.float16)))
    t = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in model_tensors(8, 16, 3).items()}
    model_seed("ours_bf16", ours, st_save_torch(t))
    t = model_tensors(8, 16, 4)
    t["input_mean"] = np.full(8, 0.5, np.float32)
    model_seed("mean_center", '{"d_in": 8, "num_latents": 16, "k": 2, "mean_center": true, "sae_type": "topk"}', st_save_np(t))
    model_seed("no_weights", ours, None)
    model_seed("k_gt_L", '{"d_in": 8, "num_latents": 16, "k": 17}', st_save_np(model_tensors(8, 16, 5)))
    model_seed("d_in_mismatch", '{"d_in": 9, "num_latents": 16, "k": 2}', st_save_np(model_tensors(8, 16, 6)))
    model_seed("huge_cfg", '{"d_in": 1000000, "num_latents": 2000000000, "k": 2}', st_save_np(model_tensors(8, 16, 7)))
    # SAELens: W_enc [d, L]
    g = np.random.default_rng(8)
    W = g.standard_normal((16, 8)).astype(np.float32)
    sl = {"W_enc": np.ascontiguousarray(W.T), "b_enc": np.zeros(16, np.float32),
          "W_dec": (W / np.linalg.norm(W, axis=1, keepdims=True)).astype(np.float32), "b_dec": np.zeros(8, np.float32)}
    model_seed("saelens6", json.dumps(CFG_SAELENS), st_save_np(sl), saelens=True)
    c = dict(CFG_SAELENS, rescale_acts_by_decoder_norm=True)
    model_seed("saelens_rescale", json.dumps(c), st_save_np(dict(sl, W_dec=2.0 * sl["W_dec"])), saelens=True)
    model_seed("saelens5_scaling", json.dumps(CFG_SAELENS5), st_save_np(dict(sl, scaling_factor=np.ones(16, np.float32))), saelens=True)
    if Sae is not None:
        # latent-sae's own files
        tmp = tempfile.mkdtemp()
        try:
            torch.manual_seed(0)
            sae = Sae(8, SaeConfig(expansion_factor=2, k=2), device="cpu")
            sae.save_to_disk(tmp)
            with open(os.path.join(tmp, "cfg.json"), "rb") as f:
                cfg = f.read()
            with open(os.path.join(tmp, "sae.safetensors"), "rb") as f:
                w = f.read()
            model_seed("latentsae_saved", cfg, w)
            put("cfg_json", "latentsae_saved.json", cfg)
            put("safetensors", "latentsae_saved.safetensors", w)
        except Exception as e:  # an API change in latent-sae must not stop the other seeds
            print("note: latent-sae model seed skipped:", e)
        finally:
            shutil.rmtree(tmp)


# ------------------------------------------------------------------------ npy
def npy_seeds():
    x = rows(6, 5)
    put("npy", "v1_f32.npy", npy_bytes(x))
    put("npy", "v2_f32.npy", npy_bytes(x, (2, 0)))
    put("npy", "v3_f32.npy", npy_bytes(x, (3, 0)))
    put("npy", "v1_f16.npy", npy_bytes(x.astype(np.float16)))
    put("npy", "fortran.npy", npy_bytes(np.asfortranarray(x)))
    put("npy", "f64.npy", npy_bytes(x.astype(np.float64)))
    put("npy", "big_endian.npy", npy_bytes(x.astype(">f4")))
    put("npy", "one_d.npy", npy_bytes(np.arange(7, dtype=np.float32)))
    put("npy", "three_d.npy", npy_bytes(np.zeros((2, 2, 3), np.float32)))
    put("npy", "empty.npy", npy_bytes(np.zeros((0, 4), np.float32)))
    put("npy", "structured.npy", npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])))
    put("npy", "int32.npy", npy_bytes(np.zeros((3, 2), np.int32)))


# ---------------------------------------------------------------------- torch
def torch_seeds():
    t = torch.from_numpy(rows(6, 4))
    put("torch", "f32.pt", torch_bytes(t))
    put("torch", "f16.pt", torch_bytes(t.half()))
    put("torch", "bf16.pt", torch_bytes(t.bfloat16()))
    put("torch", "view_offset.pt", torch_bytes(torch.arange(32, dtype=torch.float32).reshape(8, 4)[2:]))
    put("torch", "dict.pt", torch_bytes({"x": t, "ids": torch.arange(6), "meta": "run 1"}))
    put("torch", "list.pt", torch_bytes([t, torch.zeros(3)]))
    put("torch", "parameter.pt", torch_bytes(torch.nn.Parameter(t)))
    put("torch", "transposed.pt", torch_bytes(t.t()))
    put("torch", "one_d.pt", torch_bytes(torch.arange(5, dtype=torch.float32)))
    put("torch", "f64.pt", torch_bytes(t.double()))
    put("torch", "legacy.pt", torch_bytes(t, legacy=True))
    put("torch", "state_dict.pt", torch_bytes(torch.nn.Linear(4, 3).state_dict()))


# --------------------------------------------------------------------- pickle
# fuzz_pickle.c wraps the input in a zip with storages data/0 (256 bytes),
# data/1 (32) and data/2 (64): tensors whose storages have those sizes.
def pickle_seeds():
    f32 = torch.arange(64, dtype=torch.float32).reshape(8, 8)        # 256 bytes
    f16 = torch.ones(4, 4, dtype=torch.float16)                       # 32 bytes
    bf16 = torch.ones(4, 8, dtype=torch.bfloat16)                     # 64 bytes
    put("pickle", "tensor.pkl", data_pkl(torch_bytes(f32)))
    put("pickle", "view.pkl", data_pkl(torch_bytes(f32[2:])))
    put("pickle", "dict3.pkl", data_pkl(torch_bytes({"x": f32, "y": f16, "z": bf16})))
    put("pickle", "ordered.pkl", data_pkl(torch_bytes(torch.nn.Linear(8, 8).state_dict())))
    put("pickle", "list.pkl", data_pkl(torch_bytes([f32, 3, "text", 1.5, None, True])))
    put("pickle", "tuple.pkl", data_pkl(torch_bytes((f32,))))
    put("pickle", "parameter.pkl", data_pkl(torch_bytes(torch.nn.Parameter(f32))))
    put("pickle", "transposed.pkl", data_pkl(torch_bytes(f32.t())))
    put("pickle", "f16_small.pkl", data_pkl(torch_bytes(f16)))
    put("pickle", "shared.pkl", data_pkl(torch_bytes({"x": f32, "alias": f32[1:3]})))


# ------------------------------------------------------------------------ raw
def raw_seeds():
    def seed(name, d, dtype, payload):
        put("raw", name, struct.pack("<QB", d, dtype) + payload)
    seed("f32_w4", 4, 1, rows(5, 4).tobytes())
    seed("f16_w3", 3, 2, rows(4, 3, 1, np.float16).tobytes())
    seed("bf16_w2", 2, 3, torch.from_numpy(rows(4, 2, 2)).bfloat16().view(torch.int16).numpy().tobytes())
    seed("bad_dtype", 4, 9, rows(2, 4).tobytes())
    seed("wide", (1 << 62) + 1, 1, rows(2, 4).tobytes())
    seed("npy_as_raw", 4, 1, npy_bytes(rows(2, 4)))


# ------------------------------------------------------------------------- hf
def hf_seeds():
    h = "0123456789abcdef0123456789abcdef01234567"
    put("hf", "main_sub", bytes([0x06]) + b"owner/sae-name\x0064_32\x00" + h.encode() + b"\n\x00old999")
    put("hf", "main_nosub", bytes([0x04]) + b"owner/sae-name\x00\x00" + h.encode())
    put("hf", "rev_commit", bytes([0x02]) + b"owner/sae-name@old999\x0064_32\x00\x00old999")
    put("hf", "rev_branch", bytes([0x07]) + b"enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT@refs/pr/1\x0064_32\x00abc123\n")
    put("hf", "one_snapshot", bytes([0x01]) + b"owner/sae-name\x00\x00\x00only1")
    put("hf", "two_snapshots", bytes([0x00]) + b"owner/sae-name\x00\x00\x00a1\x00b2")
    put("hf", "small_buffer", bytes([0x1e]) + b"owner/sae-name\x0064_32\x00abc123")
    put("hf", "dotdot", bytes([0x06]) + b"owner/sae-name\x00../../etc\x00abc123")


# ----------------------------------------------------------------- checkpoint
# state.bin as latentsae.h's checkpoint section documents it, for the fixed
# model of fuzz_checkpoint.c (d_in 4, L 8, k 2); the harness's mode byte 1
# seals the model hashes and the trailer, so these need not know them.
M64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def lsae_hash(b):
    h = 0x9E3779B97F4A7C15
    pad = b + b"\0" * (-len(b) % 8)
    for i in range(0, len(pad), 8):
        w = struct.unpack_from("<Q", pad, i)[0]
        x = h ^ ((w * 0x87C37B91114253D5) & M64)
        h = ((((x << 31) | (x >> 33)) & M64) * 0x4CF5AD432745937F + 0x52DCE729) & M64
    return mix64(h ^ len(b))


def state_bin(d=4, L=8, k=2, step=3, blob=b"rows_read=1234", m_scale=0.0, v_scale=0.0):
    n = 2 * L * d + L + d
    payload = struct.pack(f"<{L}Q", *range(L)) + np.full(n, m_scale, np.float32).tobytes() + np.full(n, v_scale, np.float32).tobytes() + blob
    hdr = b"LSAESTAT" + struct.pack("<IIQQQQIIQQQQ", 1, 128, d, L, k, step, 1, 0, len(blob), 0, 0, len(payload))
    hdr += b"\0" * (128 - len(hdr))
    body = hdr + payload
    return body + struct.pack("<Q", lsae_hash(body))


def checkpoint_seeds():
    s = state_bin()
    put("checkpoint", "sealed_trainer", bytes([0x03]) + s)
    put("checkpoint", "sealed_weights_only", bytes([0x01]) + s)
    put("checkpoint", "sealed_tmp", bytes([0x07]) + state_bin(blob=b""))
    put("checkpoint", "moments", bytes([0x03]) + state_bin(m_scale=0.25, v_scale=0.5))
    put("checkpoint", "unsealed", bytes([0x02]) + s)
    put("checkpoint", "wrong_shape", bytes([0x03]) + state_bin(d=5))


if __name__ == "__main__":
    if os.path.isdir(OUT):
        for h in os.listdir(OUT):
            shutil.rmtree(os.path.join(OUT, h))
    cfg_seeds()
    st_seeds()
    model_seeds()
    npy_seeds()
    torch_seeds()
    pickle_seeds()
    raw_seeds()
    hf_seeds()
    checkpoint_seeds()
    for h in sorted(count):
        print(f"{h}: {count[h]} seeds")

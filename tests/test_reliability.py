#!/usr/bin/env python3
"""Crashes, full disks, read-only directories and numbers that go wrong, end to end.

    python3 tests/test_reliability.py [BUILD_DIR]

Needs BUILD_DIR/lsae and BUILD_DIR/reliability_driver (tests/reliability_driver.c,
the library's own saves and loads) and numpy. Exits non-zero on the first failure.

1. kill -9: a `lsae train --save-every 1` run is killed at 10 moments, every
   other one while a checkpoint is being written (the test waits for
   checkpoint.tmp to appear), the rest after a random delay; after each kill the
   newest checkpoint must load (lsae_checkpoint_load checks every byte against
   state.bin's hashes) at a step no earlier than before, and `--resume` goes on
   from it. A save cut between its two renames is then made by hand. The final
   model, checkpoint and fvu curve must be bit-identical to a run never
   interrupted (same seed and thread count).
2. A full disk and a read-only directory while saving, for the library
   (lsae_checkpoint_save, lsae_model_save, lsae_model_save_saelens) and for
   `lsae train --resume`: LSAE_IO_ERROR with the system's reason, one line and
   exit 1 from lsae, no temporary directory left behind, and the previous
   checkpoint and model intact and loading to the same bits. A small tmpfs
   (mounted here when the test runs as root, else in a user namespace through
   `unshare -rm`); where no mount is allowed, RLIMIT_FSIZE (writes fail with
   EFBIG) and a directory without write permission (for root, with the DAC
   capabilities dropped by setpriv) stand in. It is never skipped silently: the
   method used is printed.
3. Rows holding NaN or Inf are dropped, counted and never reach the weights:
   the model equals, bit for bit, one trained on the data with those rows left
   out.
4. An absurd learning rate, through both of the trainer's stops (a NaN loss
   found before the weights change; an update that overflows them) and each
   of lsae's reports (after a checkpoint of this run, in a resumed run before
   its first save, before any checkpoint): one clear line naming the step that
   went wrong and what to do, exit 1, and the last good checkpoint in place:
   it loads, and equals the checkpoint of a run that stops at that step
   normally; the run's model files were not overwritten by the diverged
   weights.
"""

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import testlib
from testlib import check, read_safetensors, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
DRIVER = os.path.join(BUILD, "reliability_driver")

D, EXP, K = 32, 4, 8           # the kill test's model: 128 latents
L = D * EXP
children = []                  # every process started, killed on the way out
mounts = []                    # every tmpfs mounted, unmounted on the way out


def popen(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    children.append(p)
    return p


def kill_children():
    for p in children:
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=30)
        except Exception:
            pass


def ckpt_digest(path, d=D, l=L, k=K):
    """(step, digest of weights + Adam moments + dead counters, blob) of a checkpoint, or None if it does not load."""
    p = run([DRIVER, "ckpt", path, str(d), str(l), str(k)], ok=False)
    if p.returncode != 0:
        return None, p.stdout.strip()
    w = p.stdout.split()
    return (int(w[1]), w[3], p.stdout.split(" blob ", 1)[1].strip()), None


def model_digest(path):
    p = run([DRIVER, "model", path], ok=False)
    return p.stdout.strip() if p.returncode == 0 else None


def error_line(p, what, code=1):
    """lsae's failure: exit `code`, its last stderr line 'lsae train: ...', and nothing after it."""
    lines = [l for l in p.stderr.split("\n") if l.strip()]
    check(p.returncode == code, f"{what}: exit status {p.returncode}, expected {code}\n{p.stderr}")
    check(lines and lines[-1].startswith("lsae train: "), f"{what}: the last line should be lsae's error:\n{p.stderr}")
    return lines[-1]


def tmp_leftovers(top):
    return [os.path.join(dp, n) for dp, dn, fn in os.walk(top) for n in dn + fn if n.endswith(".tmp")]


# ------------------------------------------------------------------ data

def make_data(tmp):
    rng = np.random.default_rng(0)
    # a few strong directions plus noise: something for 128 latents to learn
    basis = rng.standard_normal((48, D)).astype(np.float32)
    codes = np.maximum(rng.standard_normal((4096, 48)), 0) * (rng.random((4096, 48)) < 0.1)
    x = (codes @ basis + 0.05 * rng.standard_normal((4096, D))).astype(np.float32)
    path = os.path.join(tmp, "x.npy")
    np.save(path, x)
    return path, x


TRAIN = ["--k", str(K), "--expansion-factor", str(EXP), "--batch-size", "64", "--epochs", "4", "--lr-warmup-steps", "10",
         "--dead-feature-threshold", "3000", "--threads", "2", "--seed", "3"]


# ------------------------------------------------------------- 1. kill -9

def fresh_tmp(path, since):
    """checkpoint.tmp made by this process (one a kill left behind is older)"""
    try:
        return os.stat(path).st_mtime >= since
    except OSError:
        return False


def test_kill9(tmp, data):
    rnd_seed = int(os.environ.get("LSAE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
    rnd = random.Random(rnd_seed)
    ref = os.path.join(tmp, "ref")
    t0 = time.time()
    run([LSAE, "train", "--data", data, "--out", ref, "--save-every", "1"] + TRAIN)
    t_ref = time.time() - t0
    ref_ck, err = ckpt_digest(os.path.join(ref, "checkpoint"))
    check(ref_ck is not None, f"the uninterrupted run's checkpoint loads: {err}")
    S = ref_ck[0]
    check(S == 256, f"the run has 256 optimizer steps (got {S})")

    out = os.path.join(tmp, "killed")
    ck = os.path.join(out, "checkpoint")
    cmd = [LSAE, "train", "--data", data, "--out", out, "--save-every", "1"] + TRAIN
    last_step, mid_save, kills = 0, 0, 0
    for i in range(10):
        t_start = time.time()
        p = popen(cmd)
        if i == 0:
            # the first kill only after the first checkpoint: before it, there is no run to resume
            t_end = time.time() + 60
            while not os.path.isfile(os.path.join(ck, "state.bin")) and time.time() < t_end and p.poll() is None:
                time.sleep(0.001)
        if i % 2 == 1:
            # while a checkpoint is being written: checkpoint.tmp exists from its
            # mkdir to the rename that makes it checkpoint/
            t_end = time.time() + 60
            while not fresh_tmp(ck + ".tmp", t_start) and time.time() < t_end and p.poll() is None:
                time.sleep(0.0001)
        else:
            time.sleep(rnd.uniform(0, 0.1 * t_ref))
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        check(p.returncode == -signal.SIGKILL, f"kill {i + 1}: the run was killed, not finished (exit {p.returncode}): make the run longer")
        kills += 1
        mid_save += fresh_tmp(ck + ".tmp", t_start)
        got, err = ckpt_digest(ck)
        check(got is not None, f"kill {i + 1}: the newest checkpoint loads: {err}")
        check(got[0] >= last_step, f"kill {i + 1}: the checkpoint went back from step {last_step} to {got[0]}")
        check(json.loads(got[2])["rows_read"] == 64 * got[0], f"kill {i + 1}: the blob's data position matches the step: {got[2]}")
        last_step = got[0]
        cmd = [LSAE, "train", "--resume", out, "--threads", "2"]
    check(mid_save >= 1, f"at least one kill landed while a checkpoint was being written ({mid_save} of {kills})")

    # a save cut between its two renames: checkpoint/ moved to checkpoint.old,
    # and beside it a torn checkpoint.tmp; the older whole one must be used
    if os.path.isdir(ck + ".tmp"):
        shutil.rmtree(ck + ".tmp")
    before, _ = ckpt_digest(ck)
    os.rename(ck, ck + ".old")
    shutil.copytree(ck + ".old", ck + ".tmp")
    with open(os.path.join(ck + ".tmp", "state.bin"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(ck + ".tmp", "state.bin")) // 2)
    got, err = ckpt_digest(ck)
    check(got == before, f"with checkpoint/ missing, the whole checkpoint.old is loaded, not the torn checkpoint.tmp: {err}")

    p = run(cmd)
    check(f"from step {last_step} of {S}" in p.stderr, f"the last resume starts at step {last_step}:\n{p.stderr}")
    fin, err = ckpt_digest(ck)
    check(fin is not None and fin[:2] == ref_ck[:2], f"after 10 kills and resumes, the checkpoint equals the uninterrupted run's ({fin} vs {ref_ck})")
    check(not os.path.exists(ck + ".tmp") and not os.path.exists(ck + ".old"), "the final save cleared checkpoint.tmp and .old")
    for name in ("sae.safetensors", "cfg.json"):
        with open(os.path.join(ref, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
            check(a.read() == b.read(), f"after 10 kills and resumes, {name} is bit-identical to the uninterrupted run's")
    mr = [json.loads(l) for l in open(os.path.join(ref, "metrics.jsonl"))]
    mk = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    check([r["step"] for r in mk] == list(range(1, S + 1)), "metrics.jsonl holds every step once")
    check([r["fvu"] for r in mk] == [r["fvu"] for r in mr], "the fvu curve equals the uninterrupted run's")
    print(f"  kill -9: an uninterrupted run took {t_ref:.2f} s; 10 kills ({mid_save} while a checkpoint was being written; random seed {rnd_seed}), "
          f"each left a checkpoint that loads; resumed to the same bits as an uninterrupted run")


# ----------------------------------------------- 2. full disk, read-only

class Fs:
    """Where the disk tests write, and how it is made full or read-only."""

    def __init__(self, root, method):
        self.root, self.method = root, method
        self.filler = os.path.join(root, "filler")

    # ---- a full disk
    def fill(self, leave):
        if self.method == "rlimit":
            return
        with open(self.filler, "wb") as f:
            st = os.statvfs(self.root)
            free = st.f_bavail * st.f_frsize
            chunk = b"\0" * (1 << 16)
            todo = max(free - leave, 0)
            while todo > 0:
                n = min(todo, len(chunk))
                f.write(chunk[:n])
                todo -= n
        st = os.statvfs(self.root)
        check(st.f_bavail * st.f_frsize <= leave + 8192, "the filler left the disk nearly full")

    def unfill(self):
        if os.path.exists(self.filler):
            os.remove(self.filler)

    def full_kw(self):
        if self.method != "rlimit":
            return {}

        def limit():
            # files may not grow past 16 KiB; a write beyond fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        return {"preexec_fn": limit}

    full_errors = ("No space left on device", "File too large")

    # ---- a read-only directory
    def make_readonly(self, dirs):
        if self.method == "rlimit":
            for d in dirs:
                os.chmod(d, 0o555)
        else:
            subprocess.run(["mount", "-o", "remount,ro", self.root], check=True)

    def ro_prefix(self):
        # root ignores permission bits unless it gives up CAP_DAC_OVERRIDE
        if self.method == "rlimit" and os.geteuid() == 0:
            return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
        return []

    ro_errors = ("Read-only file system", "Permission denied")


def disk_tests(fs, data):
    M = fs.root
    ck = os.path.join(M, "ck")
    model = os.path.join(M, "model")
    sl = os.path.join(M, "saelens")
    run_dir = os.path.join(M, "run")
    rck = os.path.join(run_dir, "checkpoint")

    # the state before: a checkpoint, two models and a run stopped (Ctrl-C) after step 5
    run([DRIVER, "save-ckpt", ck, "1"])
    run([DRIVER, "save-model", model, "1"])
    run([DRIVER, "save-saelens", sl, "1"])
    c1, _ = ckpt_digest(ck, 16, 256, 4)
    m1, s1 = model_digest(model), model_digest(sl)
    check(c1 is not None and m1 and s1, "the first saves load")
    p = popen([LSAE, "train", "--data", data, "--out", run_dir, "--save-every", "5"] + TRAIN)
    for line in p.stderr:
        if "saved checkpoint at step 5" in line:
            p.send_signal(signal.SIGINT)
            break
    p.communicate()
    check(p.returncode == 130, f"Ctrl-C stops the run with a checkpoint (exit {p.returncode})")
    r1, _ = ckpt_digest(rck)
    rm1 = model_digest(run_dir)
    check(r1 is not None and rm1, "the run's checkpoint and model load")

    def unchanged(what):
        got, err = ckpt_digest(ck, 16, 256, 4)
        check(got == c1, f"{what}: the previous checkpoint is intact and loads ({err})")
        check(model_digest(model) == m1, f"{what}: the previous model is intact and loads")
        check(model_digest(sl) == s1, f"{what}: the previous SAELens model is intact and loads")
        got, err = ckpt_digest(rck)
        check(got == r1, f"{what}: the run's checkpoint is intact and loads ({err})")
        check(model_digest(run_dir) == rm1, f"{what}: the run's model is intact and loads")
        check(not os.path.exists(ck + ".tmp") and not os.path.exists(rck + ".tmp"), f"{what}: no checkpoint.tmp left taking space")
        check(not tmp_leftovers(model) and not tmp_leftovers(sl), f"{what}: no temporary file left: {tmp_leftovers(M)}")

    def library_fails(what, errors, prefix, kw):
        for kind, where, before in (("save-ckpt", ck, c1), ("save-model", model, m1), ("save-saelens", sl, s1)):
            p = run(prefix + [DRIVER, kind, where, "2"], ok=False, **kw)
            check(p.returncode == 3 and p.stdout.startswith("LSAE_IO_ERROR") and any(e in p.stdout for e in errors),
                  f"{what}: {kind} returns LSAE_IO_ERROR with the reason (exit {p.returncode}): {p.stdout}{p.stderr}")
            after = ckpt_digest(where, 16, 256, 4)[0] if kind == "save-ckpt" else model_digest(where)
            check(after == before, f"{what}: after the failed {kind}, the previous one is intact and loads")
        return p.stdout.strip()

    # ---- full: no room for a model file (the library); room for lsae to
    # rewrite metrics.jsonl and train on, not for its next checkpoint
    fs.fill(4 << 10)
    try:
        lib_msg = library_fails("full disk", fs.full_errors, [], fs.full_kw())
    finally:
        fs.unfill()
    fs.fill(48 << 10)
    try:
        p = run([LSAE, "train", "--resume", run_dir], ok=False, **fs.full_kw())
        cli_msg = error_line(p, "lsae train on a full disk")
        check(any(e in cli_msg for e in fs.full_errors), f"lsae says the disk is full: {cli_msg}")
    finally:
        fs.unfill()
    unchanged("full disk")
    print(f"  full disk ({fs.method}): library: {lib_msg}")
    print(f"  full disk ({fs.method}): {cli_msg}")

    # ---- read-only
    fs.make_readonly([M, model, sl, run_dir])
    try:
        prefix = fs.ro_prefix()
        lib_msg = library_fails("read-only", fs.ro_errors, prefix, {})
        p = run(prefix + [LSAE, "train", "--resume", run_dir], ok=False)
        cli_msg = error_line(p, "lsae train in a read-only directory")
        check(any(e in cli_msg for e in fs.ro_errors), f"lsae says the directory is read-only: {cli_msg}")
        unchanged("read-only")
    finally:
        if fs.method == "rlimit":
            for d in (M, model, sl, run_dir):
                os.chmod(d, 0o755)
    print(f"  read-only ({fs.method}): library: {lib_msg}")
    print(f"  read-only ({fs.method}): {cli_msg}")


def mount_tmpfs(where, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], capture_output=True).returncode == 0


def test_disk(tmp, data):
    M = os.path.join(tmp, "disk")
    os.makedirs(M)
    # LSAE_TEST_DISK=userns or rlimit forces a fallback (to test the fallbacks)
    force = os.environ.get("LSAE_TEST_DISK", "")
    if not force and mount_tmpfs(M, "4m"):
        mounts.append(M)
        try:
            disk_tests(Fs(M, "tmpfs"), data)
        finally:
            subprocess.run(["umount", M])
            mounts.remove(M)
        return
    # no mount here: in a user namespace (the child mounts and unmounts; its
    # mount namespace, and the tmpfs, die with it)
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True) if shutil.which("unshare") else None
    if force != "rlimit" and probe and probe.returncode == 0:
        p = subprocess.run(["unshare", "-rm", sys.executable, os.path.abspath(__file__), BUILD, "--disk-only", tmp, data])
        check(p.returncode == 0, "the disk tests in a user namespace")
        return
    print("  (no tmpfs mount%s: a file-size limit and a directory without write permission stand in)" %
          (" and no user namespace here" if force != "rlimit" else ", as LSAE_TEST_DISK asks"))
    disk_tests(Fs(M, "rlimit"), data)


def disk_only(tmp, data):
    """Inside `unshare -rm`: root of a user namespace, allowed to mount a tmpfs."""
    M = os.path.join(tmp, "disk")
    check(mount_tmpfs(M, "4m"), "mount a tmpfs in the user namespace")
    disk_tests(Fs(M, "tmpfs in a user namespace"), data)
    subprocess.run(["umount", M])


# --------------------------------------------------- 3. numbers gone wrong

def test_numbers(tmp, data, x):
    # NaN and Inf rows: dropped, counted, and the model is the one trained without them
    rng = np.random.default_rng(1)
    bad = np.sort(rng.choice(len(x), 37, replace=False))
    xn = x.copy()
    for i, r in enumerate(bad):
        xn[r, rng.integers(D)] = (np.nan, np.inf, -np.inf)[i % 3]
    nan_path, clean_path = os.path.join(tmp, "nan.npy"), os.path.join(tmp, "clean.npy")
    np.save(nan_path, xn)
    np.save(clean_path, np.delete(x, bad, axis=0))
    # file order and a constant rate after warm-up: the clean file's batches
    # are the NaN file's with the bad rows taken out, and the schedule does
    # not depend on the run's length
    args = ["--k", str(K), "--expansion-factor", str(EXP), "--batch-size", "64", "--lr-warmup-steps", "10",
            "--lr-schedule", "constant", "--no-shuffle", "--threads", "2", "--seed", "3", "--save-every", "0"]
    a, b = os.path.join(tmp, "nanrun"), os.path.join(tmp, "cleanrun")
    p = run([LSAE, "train", "--data", nan_path, "--out", a] + args)
    check("dropped 37 rows holding NaN or Inf" in p.stdout, f"lsae train reports the 37 dropped rows:\n{p.stdout}")
    run([LSAE, "train", "--data", clean_path, "--out", b] + args)
    wa, wb = read_safetensors(os.path.join(a, "sae.safetensors")), read_safetensors(os.path.join(b, "sae.safetensors"))
    check(all(np.isfinite(v).all() for v in wa.values()), "every weight is finite")
    check(all(np.array_equal(wa[k], wb[k]) for k in wa), "trained with NaN/Inf rows = trained on the file without them, bit for bit")
    m = [json.loads(l) for l in open(os.path.join(a, "metrics.jsonl"))]
    check(all(np.isfinite(r[k]) for r in m for k in ("fvu", "loss", "grad_norm")), "every logged metric is finite")
    blob = ckpt_digest(os.path.join(a, "checkpoint"))[0][2]
    check(json.loads(blob)["rows_dropped"] == 37, f"the checkpoint counts the dropped rows: {blob}")
    ev = json.loads(run([LSAE, "eval", a, nan_path, "--json"]).stdout)
    check(ev["rows_skipped"] == 37 and ev["rows"] == len(x) - 37, "eval leaves the 37 rows out and counts them")
    print("  NaN/Inf rows: 37 dropped and counted; the model equals one trained without them, bit for bit")


def test_lr(tmp, data):
    """An absurd learning rate, on each of the trainer's two ways of stopping
    a step that goes non-finite and each of lsae's three ways of reporting it.

    The trainer: lr 1e30 makes the loss of step 3 NaN, found before any weight
    changes; lr 3e38 makes the update of step 2 overflow, so the weights in
    memory hold Inf/NaN and only the trainer's refusal to save them protects
    the files. lsae: a stop after a checkpoint of this run names it; a stop in
    a resumed run before its first save names the checkpoint it resumed from;
    a stop before any checkpoint says that none was saved. Each time: exit 1,
    one line saying what went wrong at which step and what to do, the last
    good checkpoint and model files in place and equal to those of a run
    that stopped at that step normally (the constant schedule does not depend
    on the run's length), and no NaN written anywhere."""
    args = ["--k", str(K), "--expansion-factor", str(EXP), "--batch-size", "64", "--lr-warmup-steps", "2",
            "--lr-schedule", "constant", "--threads", "2", "--seed", "3"]

    def files(run_dir):
        """the run's model files and its checkpoint, as bytes (None where absent)"""
        out = {}
        for rel in ("sae.safetensors", "cfg.json", "checkpoint/sae.safetensors", "checkpoint/state.bin"):
            path = os.path.join(run_dir, rel)
            out[rel] = open(path, "rb").read() if os.path.exists(path) else None
        return out

    def failed_step(msg):
        """the 1-based optimizer step the message says went wrong"""
        check(" at optimizer step " in msg, f"the error names the step that went wrong: {msg}")
        return int(msg.split(" at optimizer step ")[1].split()[0])

    for lr, path_words, want_good in (("1e30", "loss is nan", 2), ("3e38", "a weight became NaN or Inf", 1)):
        bad_run = os.path.join(tmp, "lr" + lr)
        cmd = [LSAE, "train", "--data", data, "--out", bad_run, "--lr", lr, "--save-every", "1"] + args

        # ---- a fresh run that saved checkpoints before the bad step
        msg = error_line(run(cmd, ok=False), f"lr {lr}")
        check(path_words in msg.replace("-nan", "nan"), f"lr {lr}: stopped by the expected check ('{path_words}'): {msg}")
        check("last good checkpoint (step " in msg, f"lr {lr}: the error names the last good checkpoint: {msg}")
        good = int(msg.split("last good checkpoint (step ")[1].split(")")[0])
        # the steps are known from the schedule: a change that moves the stop
        # to another check, or lets a bad step through, shows here
        check(good == want_good, f"lr {lr}: the last good checkpoint is that of step {want_good}, not {good}")
        check(failed_step(msg) == good + 1, f"lr {lr}: the step that went wrong is the one after the checkpoint: {msg}")
        check(os.path.join(bad_run, "checkpoint") in msg, f"lr {lr}: the error says where the checkpoint is: {msg}")
        check("start a new run with a lower --lr and another --out" in msg, f"lr {lr}: the error says what to do: {msg}")
        got, err = ckpt_digest(os.path.join(bad_run, "checkpoint"))
        check(got is not None and got[0] == good, f"lr {lr}: the last good checkpoint loads at step {good}: {err}")
        ref = os.path.join(tmp, "lr_ref" + lr)
        run([LSAE, "train", "--data", data, "--out", ref, "--lr", lr, "--save-every", "1", "--max-samples", str(64 * good)] + args)
        want, _ = ckpt_digest(os.path.join(ref, "checkpoint"))
        check(got[:2] == want[:2], f"lr {lr}: the checkpoint is the one of step {good}, untouched by the failed step")
        fb, fr = files(bad_run), files(ref)
        check(fb["sae.safetensors"] == fr["sae.safetensors"] and fb["cfg.json"] == fr["cfg.json"],
              f"lr {lr}: the run's model files are the last good ones, not the diverged ones")
        w = read_safetensors(os.path.join(bad_run, "sae.safetensors"))
        check(all(np.isfinite(v).all() for v in w.values()), f"lr {lr}: the run's model holds no NaN or Inf")
        m = [json.loads(l) for l in open(os.path.join(bad_run, "metrics.jsonl"))]
        check([r["step"] for r in m] == list(range(1, good + 1)) and all(np.isfinite(r["loss"]) for r in m),
              f"lr {lr}: metrics.jsonl holds the good steps only: {[r['step'] for r in m]}")
        print(f"  lr {lr}: {msg}")

        # ---- --resume of that run: the same steps lead to the same stop
        # (as the message warned); the checkpoint it resumed from is named
        # and left as it was
        msg2 = error_line(run([LSAE, "train", "--resume", bad_run, "--threads", "2"], ok=False), f"lr {lr}, --resume")
        check(path_words in msg2.replace("-nan", "nan") and failed_step(msg2) == good + 1,
              f"lr {lr}, --resume: the same step goes wrong the same way: {msg2}")
        check(f"last good checkpoint (step {good})" in msg2 and "start a new run with a lower --lr and another --out" in msg2,
              f"lr {lr}, --resume: the error names the checkpoint resumed from and what to do: {msg2}")
        check(files(bad_run) == fb, f"lr {lr}, --resume: the checkpoint and model files are as they were")

    # ---- a stop before the first checkpoint: nothing to keep, nothing written
    none_run = os.path.join(tmp, "lr_nosave")
    cmd = [LSAE, "train", "--data", data, "--out", none_run, "--lr", "1e30", "--save-every", "0"] + args
    msg = error_line(run(cmd, ok=False), "lr 1e30 before any checkpoint")
    check("loss is nan" in msg.replace("-nan", "nan") and failed_step(msg) == 3, f"lr 1e30, no checkpoint: the error says what went wrong: {msg}")
    check("no checkpoint was saved yet" in msg and "start again with a lower --lr" in msg,
          f"lr 1e30, no checkpoint: the error says that none was saved and what to do: {msg}")
    check(files(none_run) == {k: None for k in files(none_run)}, f"lr 1e30, no checkpoint: no model or checkpoint written: {os.listdir(none_run)}")
    print(f"  lr 1e30 before any checkpoint: {msg}")
    # and the advice holds: the same command with a sane --lr trains
    cmd[cmd.index("1e30")] = "1e-3"
    run(cmd + ["--max-samples", "640"])
    w = read_safetensors(os.path.join(none_run, "sae.safetensors"))
    check(all(np.isfinite(v).all() for v in w.values()), "after the advice (a lower --lr, same --out), the run trains to finite weights")


def main():
    if "--disk-only" in sys.argv:
        i = sys.argv.index("--disk-only")
        try:
            disk_only(sys.argv[i + 1], sys.argv[i + 2])
        finally:
            kill_children()
        print(f"test_reliability (user namespace): {testlib.passed} passed")
        return
    for exe in (LSAE, DRIVER):
        check(os.access(exe, os.X_OK), f"{exe} is built")
    tmp = tempfile.mkdtemp(prefix="lsae-rel-")
    try:
        data, x = make_data(tmp)
        # LSAE_TEST_ONLY=kill9,disk,numbers,lr runs some of them
        only = os.environ.get("LSAE_TEST_ONLY", "kill9,disk,numbers,lr").split(",")
        times = []
        for name, fn in (("kill9", lambda: test_kill9(tmp, data)), ("disk", lambda: test_disk(tmp, data)),
                         ("numbers", lambda: test_numbers(tmp, data, x)), ("lr", lambda: test_lr(tmp, data))):
            if name in only:
                t = time.time()
                fn()
                times.append(f"{name} {time.time() - t:.1f} s")
        print(f"  time: {', '.join(times)}")
    finally:
        kill_children()
        for m in list(mounts):
            subprocess.run(["umount", "-l", m])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_reliability: {testlib.passed} passed, 0 failed")


if __name__ == "__main__":
    main()

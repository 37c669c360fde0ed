"""A PyTorch implementation of one latentsae training step, written from
docs/math.md, section 2 (not from latentsae.h), used as the independent
reference by tests/test_parity_torch.py and as the PyTorch baseline by bench/.

It is latent-sae's step with the fixes listed in docs/math.md, section 2.2:
the AuxK residual is e = x - x_hat (sparsify PR #47) and e_hat leaves out
b_dec (sparsify #132), dead latents are counted in rows, the schedule counts
optimizer steps."""
import math

import torch


def geometric_median(points, max_iter=100, tol=1e-5):
    """Weiszfeld's iteration from the mean, as sparsify's geometric_median."""
    guess = points.mean(dim=0)
    for _ in range(max_iter):
        prev = guess
        dist = torch.norm(points - guess, dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        weights = weights / weights.sum()
        guess = (weights.unsqueeze(1) * points).sum(dim=0)
        if torch.norm(guess - prev) < tol:
            break
    return guess


def lr_factor(s, warmup, total, schedule):
    """docs/math.md, section 2.6: s is the 0-based optimizer step."""
    W = min(warmup, total) if total else warmup
    if s < W:
        return s / W
    if schedule == 2 or total == 0:
        return 1.0
    if s >= total:
        return 0.0
    if schedule == 1:
        return 0.5 * (1.0 + math.cos(math.pi * (s - W) / (total - W)))
    return (total - s) / (total - W)


class TorchSae(torch.nn.Module):
    def __init__(self, W_enc, b_enc, W_dec, b_dec, k, multi_topk=False, normalize_decoder=True):
        super().__init__()
        self.W_enc = torch.nn.Parameter(W_enc.clone())
        self.b_enc = torch.nn.Parameter(b_enc.clone())
        self.W_dec = torch.nn.Parameter(W_dec.clone())
        self.b_dec = torch.nn.Parameter(b_dec.clone())
        self.k = k
        self.multi_topk = multi_topk
        self.normalize_decoder = normalize_decoder

    def params(self):
        return [self.W_enc, self.b_enc, self.W_dec, self.b_dec]

    def pre_acts(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)

    def decode(self, acts, idx):
        # dense gather: (B, k, d) weighted sum; the gradient reaches only the picked rows
        return (acts.unsqueeze(-1) * self.W_dec[idx]).sum(dim=1)

    def loss(self, x, dead_mask, auxk_alpha):
        """Returns (loss, fvu, auxk, multi_topk_fvu, top_indices)."""
        d = x.shape[1]
        L = self.W_enc.shape[0]
        pre = self.pre_acts(x)
        acts, idx = pre.topk(self.k, dim=1)
        x_hat = self.decode(acts, idx) + self.b_dec
        e = x - x_hat
        tv = (x - x.mean(0)).pow(2).sum()
        fvu = e.pow(2).sum() / tv
        auxk = x.new_zeros(())
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        if auxk_alpha > 0 and n_dead > 0:
            k_aux = min(d // 2, n_dead)
            scale = min(n_dead / (d // 2), 1.0)
            masked = torch.where(dead_mask[None], pre, torch.full_like(pre, -math.inf))
            a_acts, a_idx = masked.topk(k_aux, dim=1)
            e_hat = self.decode(a_acts, a_idx)
            auxk = scale * (e_hat - e.detach()).pow(2).sum() / tv
        multi = x.new_zeros(())
        if self.multi_topk:
            acts4, idx4 = pre.topk(min(4 * self.k, L), dim=1)
            x_hat4 = self.decode(acts4, idx4) + self.b_dec
            multi = (x - x_hat4).pow(2).sum() / tv
        loss = fvu + auxk_alpha * auxk + multi / 8
        return loss, fvu, auxk, multi, idx

    @torch.no_grad()
    def project_decoder_grad(self):
        w = self.W_dec.data
        g = self.W_dec.grad
        g -= (g * w).sum(dim=1, keepdim=True) * w

    @torch.no_grad()
    def renormalize_decoder(self):
        eps = torch.finfo(self.W_dec.dtype).eps
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True) + eps


class TorchTrainer:
    """One optimizer step = grad_acc_steps batches, as docs/math.md, section 2."""

    def __init__(self, sae, lr, auxk_alpha, dead_threshold, grad_acc_steps,
                 warmup, total_steps, schedule, since_fired=None, init_b_dec=False):
        self.sae = sae
        self.lr = lr
        self.auxk_alpha = auxk_alpha
        self.dead_threshold = dead_threshold
        self.acc = grad_acc_steps
        self.warmup, self.total, self.schedule = warmup, total_steps, schedule
        L = sae.W_enc.shape[0]
        self.since_fired = since_fired.clone() if since_fired is not None else torch.zeros(L, dtype=torch.int64)
        self.opt = torch.optim.Adam(sae.params(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self.step_count = 0
        self.need_b_dec = init_b_dec

    def accumulate(self, x, did_fire):
        if self.need_b_dec:
            self.sae.b_dec.data = geometric_median(x).to(x.dtype)
            self.need_b_dec = False
        dead = self.since_fired > self.dead_threshold if self.auxk_alpha > 0 else None
        loss, fvu, auxk, multi, idx = self.sae.loss(x, dead, self.auxk_alpha)
        (loss / self.acc).backward()
        did_fire[idx.flatten()] = True
        return float(fvu), float(auxk), float(multi)

    def apply(self, rows_seen, did_fire):
        params = self.sae.params()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if self.sae.normalize_decoder:
            self.sae.project_decoder_grad()
        lr = self.lr * lr_factor(self.step_count, self.warmup, self.total, self.schedule)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        if self.sae.normalize_decoder:
            self.sae.renormalize_decoder()
        self.since_fired += rows_seen
        self.since_fired[did_fire] = 0
        self.step_count += 1
        return lr


# ---------------------------------------------------------------------------
# The other SAE types (docs/math.md, section 3): BatchTopK, Matryoshka nested
# (a) and per-level (b), k-annealing. Written from that section: dense
# [B, L] activations, every selection made by sorting with the total order of
# section 3 (value descending, then row, then latent), each decoder output a
# dense masked product, autograd for the gradients.

import numpy as np  # noqa: E402

SAE_TOPK, SAE_BATCHTOPK, SAE_MATRYOSHKA = 0, 1, 2
NESTED, PER_LEVEL = 0, 1


def row_order(z_row):
    """Latent indices of one row, best first: value descending, ties to the
    lower latent (docs/math.md, section 1)."""
    return np.lexsort((np.arange(z_row.shape[0]), -z_row))


def batch_order(z):
    """Flat indices b * L + l of the whole batch, best first: value
    descending, then the lower row, then the lower latent (section 3)."""
    return np.lexsort((np.arange(z.size), -z.ravel()))


def topk_mask(z, k):
    """[B, L] 0/1: each row's best k."""
    B, L = z.shape
    mask = np.zeros((B, L), dtype=bool)
    for b in range(B):
        mask[b, row_order(z[b])[:k]] = True
    return mask


def batchtopk_select(z, k, cap):
    """Section 3.1: S = the B k best entries of the batch, tau = the smallest
    of S (before the cap); with the cap a row keeps its best min(|K_b|, k).
    Returns (mask [B, L], tau)."""
    B, L = z.shape
    N = B * k
    order = batch_order(z)[:N]
    tau = float(z.ravel()[order[-1]])
    mask = np.zeros(B * L, dtype=bool)
    mask[order] = True
    mask = mask.reshape(B, L)
    if cap:
        capped = np.zeros_like(mask)
        for b in range(B):
            kept = [l for l in row_order(z[b]) if mask[b, l]][:k]
            capped[b, kept] = True
        mask = capped
    return mask, tau


def enlarged_rows(z, k):
    """The rows the search of section 3.1 ("Finding S without sorting B L
    values") enlarges: each row offers its best M = min(L, 4k); a row with
    fewer than L candidates, all of them in the union's best N, is offered
    again with twice as many, until no row is. Also checks the section's
    claim that the union's best N is then S. Returns the number of distinct
    rows enlarged."""
    B, L = z.shape
    N = B * k
    orders = [row_order(z[b]) for b in range(B)]
    count = [min(L, 4 * k)] * B
    enlarged = set()
    while True:
        cand = np.zeros((B, L), dtype=bool)
        for b in range(B):
            cand[b, orders[b][:count[b]]] = True
        flat = np.flatnonzero(cand.ravel())
        vals = z.ravel()[flat]
        best = flat[np.lexsort((flat, -vals))[:N]]
        in_best = np.zeros(B * L, dtype=bool)
        in_best[best] = True
        in_best = in_best.reshape(B, L)
        grow = [b for b in range(B) if count[b] < L and in_best[b, orders[b][:count[b]]].all()]
        if not grow:
            break
        for b in grow:
            count[b] = min(L, 2 * count[b])
            enlarged.add(b)
    exact, _ = batchtopk_select(z, k, False)
    assert np.array_equal(in_best, exact), "the candidate search did not find S"
    return len(enlarged)


def k_annealed(s, k_f, L, start, pct, total):
    """Section 3.4: k_s of the 0-based optimizer step s, exactly (the
    quotient is taken as a fraction, so no rounding decides a floor)."""
    from fractions import Fraction
    k0 = start if start else min(4 * k_f, L)
    A = math.floor(pct * total)
    if s >= A:
        return k_f
    return math.floor(k0 + Fraction((k_f - k0) * s, max(A, 1)))


class TypedSae(TorchSae):
    """TorchSae with cfg.sae_type's selections and losses (section 3); with
    sae_type topk it is section 2's step (the self-check compares it with
    TorchSae.loss)."""

    def __init__(self, W_enc, b_enc, W_dec, b_dec, k, sae_type=SAE_TOPK, multi_topk=False,
                 row_cap=False, sizes=(), ks=(), weights=(), use_batchtopk=False, form=NESTED,
                 normalize_decoder=True):
        super().__init__(W_enc, b_enc, W_dec, b_dec, k, multi_topk, normalize_decoder)
        self.sae_type = sae_type
        self.row_cap = row_cap
        self.sizes = list(sizes)
        self.ks = list(ks)
        w = list(weights) if weights else [0.0] * len(self.sizes)
        self.weights = [1.0] * len(self.sizes) if all(v == 0 for v in w) else w
        self.use_batchtopk = use_batchtopk
        self.form = form

    def masked_decode(self, z, mask, with_b_dec=True):
        """b_dec (or not) + sum over the kept entries of z W_dec: a dense
        product with a 0/1 mask, so autograd reaches only kept entries."""
        y = (z * torch.as_tensor(mask, dtype=z.dtype)) @ self.W_dec
        return y + self.b_dec if with_b_dec else y

    def step_loss(self, x, dead_mask, auxk_alpha, k_s):
        """One batch's forward. Returns a dict: loss (a tensor), fvu, auxk,
        multi, level_fvu (list), tau (or None), fired (bool [L]),
        rows_enlarged (or None)."""
        d = x.shape[1]
        L = self.W_enc.shape[0]
        z = self.pre_acts(x)
        z_np = z.detach().numpy()
        tv = (x - x.mean(0)).pow(2).sum()

        def fvu_of(y):
            return (x - y).pow(2).sum() / tv

        out = dict(multi=0.0, level_fvu=[], tau=None, rows_enlarged=None)
        zero = x.new_zeros(())
        if self.sae_type == SAE_MATRYOSHKA and self.form == PER_LEVEL:
            m = len(self.sizes)
            ks = list(self.ks)
            ks[-1] = k_s
            fvus = []
            for j in range(m):
                n = self.sizes[j]
                zj = z_np[:, :n]
                if self.use_batchtopk:
                    mj, tau = batchtopk_select(zj, ks[j], True)
                    # each level's pick searches its own n_j latents: the
                    # statistics count the enlarged rows summed over the levels
                    out["rows_enlarged"] = (out["rows_enlarged"] or 0) + enlarged_rows(zj, ks[j])
                    if j == m - 1:
                        out["tau"] = tau
                else:
                    mj = topk_mask(zj, ks[j])
                mask = np.zeros((x.shape[0], L), dtype=bool)
                mask[:, :n] = mj
                fvus.append(fvu_of(self.masked_decode(z, mask)))
            wsum = sum(self.weights)
            loss = sum(w * f for w, f in zip(self.weights, fvus)) / wsum
            out.update(fvu=float(fvus[-1]), auxk=0.0, level_fvu=[float(f) for f in fvus],
                       fired=mask.any(axis=0))
            out["loss"] = loss
            return out

        # one selection over all L latents
        if self.sae_type == SAE_BATCHTOPK or (self.sae_type == SAE_MATRYOSHKA and self.use_batchtopk):
            mask, out["tau"] = batchtopk_select(z_np, k_s, self.row_cap)
            out["rows_enlarged"] = enlarged_rows(z_np, k_s)
        else:
            mask = topk_mask(z_np, k_s)
        out["fired"] = mask.any(axis=0)
        if self.sae_type == SAE_MATRYOSHKA:
            fvus = []
            for n in self.sizes:
                mj = mask.copy()
                mj[:, n:] = False
                fvus.append(fvu_of(self.masked_decode(z, mj)))
            x_hat = self.masked_decode(z, mask)
            loss = sum(w * f for w, f in zip(self.weights, fvus))
            fvu = fvus[-1]
            out["level_fvu"] = [float(f) for f in fvus]
        else:
            x_hat = self.masked_decode(z, mask)
            fvu = fvu_of(x_hat)
            loss = fvu
            if self.multi_topk:
                m4 = topk_mask(z_np, min(4 * k_s, L))
                multi = fvu_of(self.masked_decode(z, m4))
                loss = loss + multi / 8
                out["multi"] = float(multi)
        auxk_e = x - x_hat  # the residual AuxK explains (section 2.1's e; the last level's)
        auxk = zero
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        if auxk_alpha > 0 and n_dead > 0:
            ka = min(d // 2, n_dead)
            scale = min(n_dead / (d // 2), 1.0)
            zd = np.where(dead_mask.numpy()[None], z_np, -np.inf)
            amask = topk_mask(zd, ka)
            e_hat = self.masked_decode(z, amask, with_b_dec=False)
            auxk = scale * (e_hat - auxk_e.detach()).pow(2).sum() / tv
            loss = loss + auxk_alpha * auxk
        out.update(loss=loss, fvu=float(fvu), auxk=float(auxk))
        return out


class TypedTrainer(TorchTrainer):
    """TorchTrainer for TypedSae: k_s per optimizer step (section 3.4), the
    BatchTopK threshold per batch in float32 (section 3.1), fired = the kept
    entries (per-level: the last level's)."""

    def __init__(self, sae, lr, auxk_alpha, dead_threshold, grad_acc_steps, warmup, total_steps,
                 schedule, since_fired=None, init_b_dec=False, beta=0.999, k_anneal=False,
                 k_anneal_start=0, k_anneal_pct=0.3):
        super().__init__(sae, lr, auxk_alpha, dead_threshold, grad_acc_steps, warmup, total_steps,
                         schedule, since_fired, init_b_dec)
        self.beta32 = np.float32(beta)
        self.omb32 = np.float32(1.0 - beta)
        self.theta = np.float32(0.0)
        self.k_anneal, self.k_anneal_start, self.k_anneal_pct = k_anneal, k_anneal_start, k_anneal_pct

    def k_now(self):
        sae = self.sae
        per_level = sae.sae_type == SAE_MATRYOSHKA and sae.form == PER_LEVEL
        k_f = sae.ks[-1] if per_level else sae.k
        if not self.k_anneal:
            return k_f
        return k_annealed(self.step_count, k_f, sae.W_enc.shape[0], self.k_anneal_start,
                          self.k_anneal_pct, self.total)

    def accumulate(self, x, did_fire):
        if self.need_b_dec:
            self.sae.b_dec.data = geometric_median(x).to(x.dtype)
            self.need_b_dec = False
        dead = self.since_fired > self.dead_threshold if self.auxk_alpha > 0 else None
        k_s = self.k_now()
        out = self.sae.step_loss(x, dead, self.auxk_alpha, k_s)
        (out["loss"] / self.acc).backward()
        did_fire |= torch.as_tensor(out["fired"])
        if out["tau"] is not None:
            tau32 = np.float32(out["tau"])
            if not self.sae.row_cap and not (self.sae.sae_type == SAE_MATRYOSHKA and self.sae.form == PER_LEVEL) and self.theta == 0:
                self.theta = tau32  # uncapped: the first tau sets an unset theta
            else:
                self.theta = np.float32(np.float32(self.theta * self.beta32) + np.float32(tau32 * self.omb32))
        out["k"] = k_s
        out["theta"] = float(self.theta)
        out["loss"] = float(out["loss"])
        return out

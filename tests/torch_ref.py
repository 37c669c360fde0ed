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

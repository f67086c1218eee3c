"""Which latents differ: Delta-norm, decoder cosine and Latent Scaling, per (base, fine-tune) pair.

Sources (shared METHOD.md sections 1 and 3): Delta-norm as in Minder et al. 2025 (0 = base only,
1 = fine-tune only); Latent Scaling closed form (SA:tools/latent_scaler/closed_form.py): with
d_j = d_j^ft for every target,
    beta_j = <d_j, sum_i f_ij y_i> / (||d_j||^2 sum_i f_ij^2),
    reconstruction target y^{r,m} = x_hat^m; error target y^{eps,m} = x^m - x_hat^m + f_j d_j^m,
    nu^eps = beta^{eps,base} / beta^{eps,ft},  nu^r = beta^{r,base} / beta^{r,ft}.
The mirror statistics for base-specific latents use d_j^base and beta^{ft} / beta^{base}.
Everything is accumulated in one streaming pass over cached activations (normalised space).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor

from latentdiff.config import SelectionConfig
from latentdiff.core.crosscoder import CrossCoder, _csr_t

log = logging.getLogger(__name__)
Side = Literal["finetuned", "base", "shared", "other"]


class LatentStats(BaseModel):
    """One latent's statistics for one (base, fine-tune) pair: a row of latents.parquet."""

    latent: int = Field(description="Latent id (within its crosscoder).")
    crosscoder: str = Field(default="joint", description="Which crosscoder the latent belongs to.")
    pair: str = Field(description="Fine-tune (or control) name this row compares with the base.")
    side: Side = Field(description="finetuned-specific, base-specific, shared or other.")
    delta_norm: float = Field(description="0 = only base decoder, 1 = only fine-tune decoder.")
    cosine: float = Field(description="Cosine between the base and fine-tune decoder vectors.")
    norm_base: float = Field(description="||d^base||.")
    norm_ft: float = Field(description="||d^ft||.")
    nu_eps: float = Field(description="Latent Scaling nu-epsilon along d^ft (low = ft-specific).")
    nu_r: float = Field(description="Latent Scaling nu-r along d^ft (low = ft-specific).")
    nu_eps_base: float = Field(description="Mirror nu-epsilon along d^base (low = base-specific).")
    nu_r_base: float = Field(description="Mirror nu-r along d^base (low = base-specific).")
    freq: float = Field(description="Fraction of held-out tokens where the latent fires.")
    mean_act: float = Field(description="Mean activation when it fires.")
    contrib_base: float = Field(description="Mean f * ||d^base|| over tokens (base's use of it).")
    contrib_ft: float = Field(description="Mean f * ||d^ft|| over tokens (the fine-tune's use).")


def delta_norm(norm_base: Tensor, norm_ft: Tensor) -> Tensor:
    """Delta_j = 0.5 * ((||d^ft|| - ||d^base||) / max(...) + 1)  in [0, 1]."""
    return 0.5 * ((norm_ft - norm_base) / torch.maximum(norm_ft, norm_base).clamp_min(1e-12) + 1)


def decoder_cosine(d_base: Tensor, d_ft: Tensor) -> Tensor:
    """cos(d^base, d^ft) per latent; d_* [F, D]."""
    return torch.nn.functional.cosine_similarity(d_base, d_ft, dim=-1, eps=1e-12)


class ScalingAccumulator:
    """Streaming sums for Latent Scaling of every latent, for one (base, ft) pair of model indices."""

    def __init__(self, cc: CrossCoder, base: int, ft: int) -> None:
        dec = cc.decoder().detach()  # [F, M, D]
        self.base, self.ft = base, ft
        self.dirs = {"ft": dec[:, ft], "base": dec[:, base]}  # [F, D] each
        self.dec = dec
        F = dec.shape[0]
        self.C = torch.zeros(F, dtype=torch.float64)
        # numerators A[direction][target][model]  -> [F]
        self.A = {
            d: {t: {m: torch.zeros(F, dtype=torch.float64) for m in (base, ft)} for t in ("r", "eps")}
            for d in ("ft", "base")
        }

    def update(
        self, x: Tensor, f: Tensor, recon: Tensor, sums: dict[tuple[str, int], Tensor] | None = None,
        f_sq: Tensor | None = None,
    ) -> None:
        """x, recon [N, M, D] (normalised); f [N, F] latent activations.

        sums: `target_sums` of this batch (shared by every pair of a batch); f_sq: sum_i f_ij^2 [F].
        A_j += sum_i f_ij <y_i, d_j> = <d_j, sum_i f_ij y_i>: one [F, N] x [N, D] product per model and
        target instead of an [N, F] projection per direction, model and target.
        """
        if sums is None:
            sums = target_sums(x, f, recon, (self.base, self.ft))
        self.C += f.double().pow(2).sum(0) if f_sq is None else f_sq
        for d, dirs in self.dirs.items():
            dd = dirs.double()  # [F, D]
            for m in (self.base, self.ft):
                for t in ("r", "eps"):
                    self.A[d][t][m] += (dd * sums[(t, m)]).sum(-1)  # [F]

    def nus(self) -> dict[str, Tensor]:
        """nu_eps, nu_r (along d^ft: base/ft) and their mirrors (along d^base: ft/base)."""
        out: dict[str, Tensor] = {}
        C = self.C.clamp_min(1e-12)
        for d, dirs in self.dirs.items():
            dn2 = dirs.double().pow(2).sum(-1).clamp_min(1e-12)  # [F]
            beta: dict[tuple[str, int], Tensor] = {}
            for m in (self.base, self.ft):
                own = (dirs.double() * self.dec[:, m].double()).sum(-1)  # <d_j, d_j^m>
                beta[("r", m)] = self.A[d]["r"][m] / (C * dn2)
                beta[("eps", m)] = (self.A[d]["eps"][m] + own * self.C) / (C * dn2)
            num, den = (self.base, self.ft) if d == "ft" else (self.ft, self.base)
            suffix = "" if d == "ft" else "_base"
            for t in ("eps", "r"):
                out[f"nu_{t}{suffix}"] = beta[(t, num)] / _safe(beta[(t, den)])
        return out


def target_sums(x: Tensor, f: Tensor, recon: Tensor, models: Iterable[int]) -> dict[tuple[str, int], Tensor]:
    """(target, model) -> sum_i f_ij y_i [F, D] in float64, for y = the reconstruction ('r') and the error
    x - recon ('eps') of model m (x, recon [N, M, D]; f [N, F]).

    f is sparse (k of F latents per token): the sums are a sparse [F, N] x dense [N, D] product over the
    active pairs (a 60x smaller product than the dense one at the demo's k 32 of 2,048, and no dense float64
    copy of f). Float64 throughout; only the order of the additions differs from the dense product.
    """
    return _sparse_target_sums(x, _SparseCodes.of(f), recon, models)


class _SparseCodes:
    """The active (token, latent) pairs of a dense f [N, F] as a float64 CSR matrix of f^T [F, N]."""

    def __init__(self, tokens: Tensor, latents: Tensor, vals: Tensor, shape: tuple[int, int]) -> None:
        self.latents, self.vals, self.shape = latents, vals, shape  # vals float64 [nnz]
        self.ft = _csr_t(tokens, latents, vals, shape)  # [F, N]: the decoder's sparse-transpose helper

    @classmethod
    def of(cls, f: Tensor) -> _SparseCodes:
        tokens, latents = f.nonzero(as_tuple=True)  # [nnz] each, row-major
        return cls(tokens, latents, f[tokens, latents].double(), tuple(f.shape))  # type: ignore[arg-type]

    def per_latent(self, values: Tensor) -> Tensor:
        """sum over each latent's active tokens of `values` [nnz] -> [F] float64."""
        return torch.zeros(self.shape[1], dtype=torch.float64).index_add_(0, self.latents, values)


def _sparse_target_sums(x: Tensor, codes: _SparseCodes, recon: Tensor,
                        models: Iterable[int]) -> dict[tuple[str, int], Tensor]:
    out: dict[tuple[str, int], Tensor] = {}
    for m in models:
        r = recon[:, m].double()  # [N, D]
        out[("r", m)] = codes.ft @ r  # [F, D]
        out[("eps", m)] = codes.ft @ (x[:, m].double() - r)  # [F, D]
    return out


def _safe(x: Tensor) -> Tensor:
    return torch.where(x.abs() < 1e-12, torch.full_like(x, 1e-12), x)


@torch.no_grad()
def latent_statistics(
    cc: CrossCoder, batches: Iterable[Tensor], base: int, fts: dict[str, int]
) -> dict[str, dict[str, np.ndarray]]:
    """One pass over raw batches [N, M, D]: per pair name, arrays of every statistic [F]."""
    accs = {name: ScalingAccumulator(cc, base, ft) for name, ft in fts.items()}
    F = cc.spec.dict_size
    fires = torch.zeros(F, dtype=torch.float64)
    act_sum = torch.zeros(F, dtype=torch.float64)
    n_tok = 0
    for raw in batches:
        x = cc.normalize(raw.float())  # [N, M, D]
        f = cc.encode(x)  # [N, F]
        recon = cc.decode(f)  # [N, M, D]
        codes = _SparseCodes.of(f)  # the active pairs: f is k-sparse, no dense float64 copy of it
        fires += torch.bincount(codes.latents, minlength=F).double()
        act_sum += codes.per_latent(codes.vals)
        n_tok += x.shape[0]
        sums = _sparse_target_sums(x, codes, recon, sorted({base, *fts.values()}))  # shared by the pairs
        f_sq = codes.per_latent(codes.vals.pow(2))  # [F]
        for acc in accs.values():
            acc.update(x, f, recon, sums, f_sq)
    norms = cc.decoder_norms().detach()  # [F, M]
    dec = cc.decoder().detach()
    freq = fires / max(n_tok, 1)
    mean_act = act_sum / fires.clamp_min(1)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, ft in fts.items():
        stats = {
            "delta_norm": delta_norm(norms[:, base], norms[:, ft]),
            "cosine": decoder_cosine(dec[:, base], dec[:, ft]),
            "norm_base": norms[:, base],
            "norm_ft": norms[:, ft],
            "freq": freq,
            "mean_act": mean_act,
            "contrib_base": act_sum / max(n_tok, 1) * norms[:, base].double(),
            "contrib_ft": act_sum / max(n_tok, 1) * norms[:, ft].double(),
            **accs[name].nus(),
        }
        out[name] = {k: v.double().numpy() for k, v in stats.items()}
    return out


def classify(stats: dict[str, np.ndarray], cfg: SelectionConfig, method: str | None = None) -> np.ndarray:
    """Side of every latent for one pair: array of 'finetuned' / 'base' / 'shared' / 'other'."""
    method = method or cfg.method
    dn = stats["delta_norm"]
    alive = stats["freq"] > 0
    side = np.full(dn.shape, "other", dtype=object)
    side[(np.abs(dn - 0.5) < cfg.shared_band) & alive] = "shared"
    if method == "delta_norm":
        ft = (dn >= cfg.finetuned_delta) & alive
        bs = (dn <= cfg.base_delta) & alive
        if min(ft.sum(), bs.sum()) < cfg.min_count:
            log.info(
                "delta_norm found %d ft / %d base latents (< %d): falling back to latent_scaling",
                ft.sum(),
                bs.sum(),
                cfg.min_count,
            )
            return classify(stats, cfg, "latent_scaling")
    else:
        order = np.argsort(-dn, kind="stable")
        order = order[alive[order]]
        top_ft = np.zeros_like(alive)
        top_ft[order[: cfg.top_n][dn[order[: cfg.top_n]] > 0.5]] = True
        top_bs = np.zeros_like(alive)
        tail = order[::-1][: cfg.top_n]
        top_bs[tail[dn[tail] < 0.5]] = True
        if method == "rank":
            ft, bs = top_ft, top_bs
        else:  # latent_scaling
            ft = top_ft & (stats["nu_eps"] < cfg.nu_eps_max) & (stats["nu_r"] < cfg.nu_r_max)
            bs = top_bs & (stats["nu_eps_base"] < cfg.nu_eps_max) & (stats["nu_r_base"] < cfg.nu_r_max)
    side[ft] = "finetuned"
    side[bs & ~ft] = "base"
    return side


def latents_table(all_stats: dict[str, dict[str, np.ndarray]], cfg: SelectionConfig) -> list[LatentStats]:
    """Rows for every latent and pair (the latents table)."""
    rows: list[LatentStats] = []
    for pair, stats in all_stats.items():
        side = classify(stats, cfg)
        for j in range(len(side)):
            rows.append(
                LatentStats(
                    latent=j,
                    pair=pair,
                    side=side[j],
                    **{
                        k: float(np.nan_to_num(stats[k][j], nan=0.0, posinf=1e9, neginf=-1e9))
                        for k in LatentStats.model_fields
                        if k in stats
                    },
                )
            )
    return rows


def write_table(rows: list[LatentStats], path: Path) -> None:
    """Write the latents table as parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latentdiff.io import atomic_write

    table = pa.Table.from_pylist([r.model_dump() for r in rows])
    atomic_write(Path(path), lambda p: pq.write_table(table, str(p)))


def read_table(path: Path) -> list[LatentStats]:
    """Read latents.parquet back into typed rows."""
    import pyarrow.parquet as pq

    return [LatentStats(**r) for r in pq.read_table(str(path)).to_pylist()]

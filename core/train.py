"""Crosscoder training loop: Adam with warm-up and decay, clipping, checkpoints, metrics.

Checkpoints (weights, optimiser, step, RNG, dead-latent counters, threshold) are written atomically
every `checkpoint_every` steps. Batch i of the data stream is a pure function of (seed, i), so a run
killed at any point and restarted continues with the same data order and reaches the same weights.

Under torchrun (docs/scaling.md) each rank trains on its contiguous slice of global batch i inside
DistributedDataParallel (gradients averaged); what depends on the whole batch is computed over all
ranks: the BatchTopK selection, the AuxK denominator, the threshold EMA, the dead-latent counters,
the b_dec initialisation and the logged metrics. With `crosscoder.shard_dict` each rank instead
holds one block of latents and sees the whole batch (`core/shard.py`). Rank 0 alone writes
checkpoints and metrics, and a checkpoint holds nothing that depends on the number of ranks or on
the mode (a sharded dictionary is gathered into the single-process layout).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from latentdiff.config import CrosscoderConfig
from latentdiff.core import distributed as dist
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec, auxk_loss, l1_penalty, recon_loss
from latentdiff.core.shard import ShardedCrossCoder, clip_grad_norm_
from latentdiff.core.threads import ThreadGovernor
from latentdiff.errors import ConfigError, UnsafeCheckpoint
from latentdiff.io import atomic_write
from latentdiff.progress import progress as make_progress
from latentdiff.tracking import MetricsLogger

log = logging.getLogger(__name__)
THRESHOLD_START = 0.5  # fraction of training after which the BatchTopK threshold EMA starts


def learning_rate(cfg: CrosscoderConfig, step: int) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last (1 - decay_start) of training."""
    lr = cfg.lr if cfg.lr is not None else 2e-4 / math.sqrt(cfg.dict_size / 2**14)
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    decay_from = int(cfg.decay_start * cfg.steps)
    if step >= decay_from and cfg.steps > decay_from:
        return lr * (cfg.steps - step) / (cfg.steps - decay_from)
    return lr


def current_k(cfg: CrosscoderConfig, step: int) -> int:
    """k, annealed linearly from k_start over k_anneal_steps when configured."""
    if cfg.k_start is None or cfg.k_anneal_steps == 0 or step >= cfg.k_anneal_steps:
        return cfg.k
    return round(cfg.k_start + (cfg.k - cfg.k_start) * step / cfg.k_anneal_steps)


def to_device(batch: Tensor, device: torch.device) -> Tensor:
    """A host batch on `device`: through pinned memory with an asynchronous copy when it is CUDA.

    Pinned (page-locked) memory lets the copy run by DMA without the CPU waiting for it; kernels
    queued after it on the same stream see the data. CPU fallback: `batch.to(device)`, the batch
    itself, never pinned.
    """
    if device.type != "cuda" or batch.is_cuda:
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def _geometric_median(x: Tensor, iters: int = 50) -> Tensor:
    """Weiszfeld's algorithm over rows of x [N, K]."""
    point = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - point).norm(dim=-1).clamp_min(1e-8)
        point = (w[:, None] * x).sum(0) / w.sum()
    return point


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded with `weights_only=True`: tensors and plain types only, never
    arbitrary pickled objects (a run folder from someone else must not run code when resumed).

    A file that holds anything else, or is not a readable checkpoint, raises `UnsafeCheckpoint` (one line).
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object it does not allow
        first = next((ln.strip() for ln in str(err).splitlines() if "unsupported" in ln.lower()), "")
        raise UnsafeCheckpoint(
            f"{path}: refused to load a checkpoint that holds more than tensors and plain values "
            f"({first or type(err).__name__}); delete it to train this crosscoder from scratch"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UnsafeCheckpoint(
            f"{path}: not a readable checkpoint ({first}); delete it to train from scratch"
        ) from None
    if not isinstance(state, dict) or not {"cc", "opt", "step", "since_fired", "rng"} <= set(state):
        raise UnsafeCheckpoint(f"{path}: not a latentdiff training checkpoint; delete it to train from scratch")
    return state


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam (betas 0.9, 0.999), with torch's fused kernel where the device has one (CPU, CUDA).

    The fused update reads and writes each parameter and its two moments once; the default CPU path
    runs about ten elementwise passes per tensor, and was the largest cost of a CPU step after the GEMM
    (docs/benchmarks.md). Same update up to float rounding (its ops are ordered differently).
    """
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


def _state_like_params(opt: torch.optim.Optimizer) -> None:
    """Lay each loaded optimiser moment out in memory like its parameter.

    torch's fused Adam walks a parameter and its moments as flat memory, so a moment whose strides
    differ from its parameter's (a checkpoint written with another layout: gathered from sharded
    ranks, or by a version whose W_dec was a permuted view) is applied to the wrong elements
    (measured: a resumed run diverged from the uninterrupted one at its first step).
    `Optimizer.load_state_dict` keeps the saved strides.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _upgrade_encoder_moments(state: dict[str, Any], param_names: list[str]) -> None:
    """Checkpoints written before the encoder was stored latent-major hold its Adam moments in W_enc's
    layout [M, D, F]; the parameter is now W_enc_t [F, M, D]. Permute them (whole-dictionary
    checkpoints, so this holds for one process and for sharded ranks alike)."""
    enc = state["cc"]["W_enc"]  # [M, D, F]
    entry = state["opt"]["state"].get(param_names.index("W_enc_t"), {})
    for key, value in entry.items():
        if torch.is_tensor(value) and value.shape == enc.shape and enc.shape != enc.permute(2, 0, 1).shape:
            entry[key] = value.permute(2, 0, 1)


class Trainer:
    """Train one crosscoder on a stream of normalised-on-the-fly batches."""

    def __init__(
        self,
        cfg: CrosscoderConfig,
        spec: CrossCoderSpec,
        mean: Tensor,
        scale: Tensor,
        out: Path,
        device: torch.device,
    ) -> None:
        self.cfg, self.out, self.device, self.spec = cfg, Path(out), device, spec
        self.world = dist.world_size()
        self.sharded = cfg.shard_dict and self.world > 1  # one block of latents per rank (core/shard.py)
        self.data_ranks = 1 if self.sharded else self.world  # ranks that split each global batch
        cls = ShardedCrossCoder if self.sharded else CrossCoder
        self.cc: CrossCoder = cls(spec, seed=cfg.seed).to(device)
        self.cc.act_mean.copy_(mean)
        self.cc.act_scale.copy_(scale)
        self.model: torch.nn.Module = self.cc  # what the forward pass runs through (DDP under torchrun)
        if self.data_ranks > 1:
            if cfg.batch_size % self.world:
                raise ConfigError(f"crosscoder.batch_size ({cfg.batch_size}) must divide by the {self.world} ranks")
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.cc, device_ids=ids, forward_sync_buffers=False)
        self.opt = _adam(list(self.cc.parameters()), learning_rate(cfg, 0))
        self.step = 0
        self.since_fired = torch.zeros(self.cc.spec.dict_size, dtype=torch.long, device=device)  # [F] (block: [F/W])
        # CPU, one process: the thread count is timed and chosen per stretch of steps (core/threads.py)
        self.governor = (ThreadGovernor(torch.get_num_threads()) if device.type == "cpu" and self.world == 1
                         and cfg.cpu_threads is None else None)

    def run_step(self, raw: Tensor, metrics: bool = True) -> dict[str, float]:
        """`train_step` as `fit` runs it: under the thread governor on CPU (the same weights, faster)."""
        g = self.governor
        if g is None:
            return self.train_step(raw, metrics)
        g.before()
        t = time.perf_counter()
        out = self.train_step(raw, metrics)
        g.after(time.perf_counter() - t)
        return out

    # ------------------------------------------------------------------ checkpoints

    @property
    def ckpt_path(self) -> Path:
        """Where the resumable checkpoint lives."""
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        """Atomically save everything needed to continue exactly, as one process would hold it.

        Rank 0 writes; a sharded dictionary is first gathered there (every rank takes part).
        """
        if isinstance(self.cc, ShardedCrossCoder):
            cc_state, opt_state = self.cc.full_state_dict(), self.cc.full_optimizer_state(self.opt)
            since_fired = dist.gather_to_main(self.since_fired)
        elif dist.is_main():
            cc_state, opt_state, since_fired = self.cc.state_dict(), self.opt.state_dict(), self.since_fired
        if not dist.is_main():
            return
        # tensors and plain types only, so that it loads with torch.load(weights_only=True)
        state = {"cc": cc_state, "opt": opt_state, "step": int(self.step), "since_fired": since_fired,
                 "rng": torch.get_rng_state()}
        atomic_write(self.ckpt_path, lambda p: torch.save(state, p))

    def load_checkpoint(self) -> bool:
        """Resume from the checkpoint if there is one (written by any number of ranks, sharded or not)."""
        if not self.ckpt_path.is_file():
            return False
        state = load_checkpoint_file(self.ckpt_path)
        _upgrade_encoder_moments(state, [name for name, _ in self.cc.named_parameters()])
        if isinstance(self.cc, ShardedCrossCoder):
            self.cc.load_full_state_dict(state["cc"])
            self.cc.load_full_optimizer_state(self.opt, state["opt"])
            since_fired = state["since_fired"][self.cc.start : self.cc.stop]
        else:
            self.cc.load_state_dict(state["cc"])
            self.opt.load_state_dict(state["opt"])
            since_fired = state["since_fired"]
        _state_like_params(self.opt)
        self.step = state["step"]
        self.since_fired = since_fired.to(self.device, copy=True)
        torch.set_rng_state(state["rng"])
        log.info("resuming crosscoder training at step %d", self.step)
        return True

    # ------------------------------------------------------------------ one step

    def train_step(self, raw: Tensor, metrics: bool = True) -> dict[str, float]:
        """One optimisation step on raw activations [batch, M, D]; returns its metrics (FVU per model,
        loss, L0, dead fraction, lr), or {} with `metrics=False` (`fit` computes them on the steps it
        logs; under torchrun every rank must pass the same value: the metrics are collective)."""
        cfg, cc = self.cfg, self.cc
        x = cc.normalize(to_device(raw, self.device))  # [B, M, D] (torchrun: this rank's [B / world, M, D])
        spread = self.data_ranks > 1  # x is this rank's slice of the global batch
        if self.step == 0:
            with torch.no_grad():
                full = dist.all_gather_cat(x) if spread else x  # [B, M, D] the global batch
                cc.b_dec.copy_(_geometric_median(full.reshape(full.shape[0], -1)).view_as(cc.b_dec))
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        k = current_k(cfg, self.step)
        use_bf16 = cfg.autocast_bf16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.model(x, k=k, global_batch=spread)
            recon = recon_loss(x, out.recon.float())
            if cfg.arch == "l1":
                lam = cfg.l1_coeff * min(1.0, (self.step + 1) / max(1, cfg.l1_warmup_steps))
                sparsity = lam * l1_penalty(cc, out.idx, out.vals, x.shape[0], cfg.shared_penalty_ratio)
                aux = x.new_zeros(())
            else:
                sparsity = x.new_zeros(())
                dead = (self.since_fired >= cfg.dead_tokens).float()
                aux = cfg.aux_alpha * auxk_loss(cc, x, out.recon.float(), out.pre, dead, global_batch=spread)
            loss = recon + sparsity + aux  # sharded: this block's L1 term, the rest is global
        loss.backward()
        if isinstance(cc, ShardedCrossCoder):
            clip_grad_norm_(cc, cfg.grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(cc.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
            fired[out.idx[:, 1]] = True
            if spread:
                fired = dist.all_reduce(fired.to(torch.uint8), "max").bool()  # fired on any rank
            self.since_fired += x.shape[0] * self.data_ranks
            self.since_fired[fired] = 0
            if cfg.arch == "batchtopk" and self.step >= THRESHOLD_START * cfg.steps:
                low = self._min_selected_score(out.idx, out.vals)
                if low is not None:
                    cc.threshold.copy_(low if cc.threshold < 0 else 0.999 * cc.threshold + 0.001 * low)
        self.step += 1
        if not metrics:
            return {}
        total_loss = float(recon.detach() + cc.total(sparsity.detach()) + aux.detach())  # every block's L1
        return self._metrics(x, out.recon.detach(), out.idx, total_loss, float(aux.detach()))

    def _min_selected_score(self, idx: Tensor, vals: Tensor) -> Tensor | None:
        """Smallest score among the entries BatchTopK kept (over every rank); None if none was kept."""
        if not (self.world > 1 or vals.numel()):
            return None
        scores = vals.detach() * self.cc.decoder_norms().sum(-1)[idx[:, 1]]  # [nnz]
        if self.world == 1:
            return scores.min()
        low = dist.all_reduce(scores.min() if scores.numel() else scores.new_tensor(math.inf), "min")
        return low if math.isfinite(float(low)) else None

    def _metrics(self, x: Tensor, recon: Tensor, idx: Tensor, loss: float, aux: float) -> dict[str, float]:
        err = (x - recon).pow(2).sum(-1)  # [B, M]
        n_active = float(self.cc.total(idx.new_tensor([idx.shape[0]]))) / x.shape[0]  # every block's
        if self.data_ranks == 1:  # the whole batch is here
            var = (x - x.mean(0)).pow(2).sum(-1)  # [B, M]
            fvu = (err.sum(0) / var.sum(0)).tolist()
        else:  # the global batch's figures, the same on every rank
            n, M = x.shape[0] * self.world, x.shape[1]
            mean = dist.all_reduce(x.sum(0)) / n  # [M, D] global batch mean
            local = torch.cat([err.sum(0), (x - mean).pow(2).sum(-1).sum(0), x.new_tensor([idx.shape[0], loss, aux])])
            tot = dist.all_reduce(local)  # [2M + 3]
            fvu = (tot[:M] / tot[M : 2 * M]).tolist()
            n_active, loss, aux = float(tot[2 * M]) / n, float(tot[2 * M + 1]) / self.world, float(tot[-1]) / self.world
        names = self.cc.spec.model_names or [str(i) for i in range(len(fvu))]
        m: dict[str, float] = {
            "step": self.step,
            "loss": loss,
            "auxk": aux,
            "l0": n_active,
            "dead_frac": float(self.cc.total((self.since_fired >= self.cfg.dead_tokens).float())) / self.spec.dict_size,
            "lr": self.opt.param_groups[0]["lr"],
        }
        m.update({f"fvu_{n}": f for n, f in zip(names, fvu)})
        return m

    # ------------------------------------------------------------------ loop

    def fit(self, batches: Callable[[int], Iterator[Tensor]], show: bool = True,
            tracker: MetricsLogger | None = None) -> CrossCoder:
        """Train to cfg.steps; `batches(start)` yields raw batches from global index `start`.

        `tracker` (rank 0) receives every metrics.jsonl row as `train/` scalars (latentdiff/tracking.py).
        """
        cfg, main = self.cfg, dist.is_main()
        self.out.mkdir(parents=True, exist_ok=True)
        self.load_checkpoint()
        metrics_path = self.out / "metrics.jsonl"
        if main:
            _truncate_metrics(metrics_path, self.step)
        stream = batches(self.step)
        t0, tokens = time.perf_counter(), 0
        cols = (
            TextColumn("train crosscoder"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        metrics_fh = metrics_path.open("a") if main else open(os.devnull, "w")  # rank 0 logs the global figures
        threads = torch.get_num_threads()  # restored at the end: the governor or cpu_threads may change it
        if cfg.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(cfg.cpu_threads)
        with make_progress(*cols, disable=not (show and main)) as progress, metrics_fh as log_fh, \
                _restore_threads(threads):
            task = progress.add_task("train", total=cfg.steps, completed=self.step, info="")
            shown = ""  # the last logged step's figures, shown until the next one
            while self.step < cfg.steps:
                raw = next(stream)  # [B, M, D] the global batch
                raw = dist.rank_slice(raw) if self.data_ranks > 1 else raw  # [B / world, M, D]: this rank's part
                log_now = (self.step + 1) % 10 == 0 or self.step + 1 == cfg.steps  # the same on every rank
                m = self.run_step(raw, metrics=log_now)
                tokens += raw.shape[0] * self.data_ranks
                rate = tokens / (time.perf_counter() - t0)
                if log_now:
                    m["tok_s"] = rate
                    row = {k: round(v, 6) for k, v in m.items()}
                    log_fh.write(json.dumps(row) + "\n")
                    log_fh.flush()
                    if tracker is not None and main:  # the same row: no extra device sync
                        tracker.log({k: v for k, v in row.items() if k != "step"}, self.step, "train")
                    fvus = " ".join(f"{k[4:]}={v:.3f}" for k, v in m.items() if k.startswith("fvu_"))
                    shown = f"FVU {fvus} L0 {m['l0']:.0f} "
                progress.update(task, advance=1, info=f"{shown}{rate:,.0f} tok/s")
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    log_fh.flush()
                    self.save_checkpoint()
        whole = self.cc.to_full() if isinstance(self.cc, ShardedCrossCoder) else self.cc  # rank 0: gathered
        if main:
            whole.save(self.out)
            plot_metrics(metrics_path, self.out / "metrics.png")
            self.ckpt_path.unlink(missing_ok=True)
        dist.barrier()
        return whole if main else self.cc


@contextmanager
def _restore_threads(n: int) -> Iterator[None]:
    """Set torch's CPU thread count back to n on the way out."""
    try:
        yield
    finally:
        torch.set_num_threads(n)


def plot_metrics(metrics_path: Path, out: Path) -> None:
    """Training curves: FVU per model, L0, dead-latent fraction and AuxK loss (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for key in (k for k in rows[-1] if k.startswith("fvu_")):
        axes[0].plot(steps, [r[key] for r in rows], label=key[4:])
    axes[0].set(title="FVU per model", xlabel="step", yscale="log")
    axes[0].legend(fontsize=8)
    for ax, key, title in ((axes[1], "l0", "L0 (active latents / token)"), (axes[2], "dead_frac", "dead latents"),
                           (axes[3], "auxk", "AuxK loss")):
        ax.plot(steps, [r.get(key, 0.0) for r in rows])
        ax.set(title=title, xlabel="step")
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (no duplicates on resume).

    Rewritten atomically (a kill during the rewrite must not lose the lines before the checkpoint);
    a torn last line (killed mid-append) was written after the checkpoint, so it is dropped too.
    """
    if not path.is_file():
        return

    def before_checkpoint(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= step
        except json.JSONDecodeError:
            return False

    keep = [ln for ln in path.read_text().splitlines() if ln and before_checkpoint(ln)]
    atomic_write(path, lambda p: p.write_text("".join(ln + "\n" for ln in keep)))
